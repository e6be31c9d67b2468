// -----------------------------------------------------------------------------
// File: sha256.h
// -----------------------------------------------------------------------------
// SHA-256 (FIPS 180-4) of a byte string, for provenance fields such as a signature space's
// `training_sha256` (the digest of the calibration file `eldr fit` read). Not constant-time and
// not meant for secrets: it fingerprints files.
//
// Thread-safety: pure functions.
//
// Example:
//   std::string hex = Sha256Hex(file_bytes);  // 64 lowercase hex digits
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace eldr {

// The 32-byte digest of `bytes`.
std::array<uint8_t, 32> Sha256(std::string_view bytes);

// The digest as 64 lowercase hex digits, as `sha256sum` and Python's hexdigest() print it.
std::string Sha256Hex(std::string_view bytes);

// True when `s` is 64 lowercase hex digits (the form Sha256Hex returns).
bool IsSha256Hex(std::string_view s);

}  // namespace eldr
