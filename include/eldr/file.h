// -----------------------------------------------------------------------------
// File: file.h
// -----------------------------------------------------------------------------
// Whole-file reads and crash-safe writes for eldr's files (spaces, traces, results).
//
// Thread-safety: reentrant; concurrent writers of one path race for the last rename.
#pragma once

#include <string>
#include <string_view>

#include "eldr/status.h"

namespace eldr {

// The file's bytes. NotFound when it cannot be opened, DataLoss on a read error.
Result<std::string> ReadFile(const std::string& path);

// Writes `data` to a temporary sibling (path + ".tmp") and renames it over `path`, so a crash or
// a reader never sees a half-written file. Unavailable or DataLoss naming the file on failure.
Status WriteFileAtomically(const std::string& path, std::string_view data);

}  // namespace eldr
