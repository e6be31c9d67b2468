// -----------------------------------------------------------------------------
// File: gzip.h
// -----------------------------------------------------------------------------
// gzip (RFC 1952) members written and read with zlib. A file may hold several members one after
// another (as `cat a.gz b.gz` makes, and as eldr's capture files are written: one member per
// batch, so a file cut short by a crash keeps every complete batch).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "eldr/status.h"

namespace eldr {

// True when `bytes` starts with the gzip magic (1f 8b).
bool IsGzip(std::string_view bytes);

// One complete gzip member holding `data`, compressed at zlib `level` (1 fastest .. 9 smallest).
// Internal only when zlib itself fails (out of memory).
Result<std::string> GzipMember(std::string_view data, int level = 6);

struct GunzipOptions {
  size_t max_output = size_t{1} << 32;  // more decompressed bytes: ResourceExhausted (a bomb)
  // Accept a stream whose last member is cut short (a writer that died mid-batch): what the
  // complete members hold is returned and GunzipInfo::truncated_bytes says how much was dropped.
  bool allow_truncated_tail = false;
};

struct GunzipInfo {
  int members = 0;             // complete members inflated
  size_t truncated_bytes = 0;  // bytes of an incomplete last member (allow_truncated_tail only)
};

// Inflates every member of `in`. Unless allowed, the stream must end exactly with a complete
// member (header, deflate data, CRC-32 and length trailer); a truncated stream, a bad checksum or
// trailing bytes that are not another member are DataLoss. Corruption inside a member is DataLoss
// even with allow_truncated_tail.
Result<std::string> Gunzip(std::string_view in, const GunzipOptions& options = {},
                           GunzipInfo* info = nullptr);

}  // namespace eldr
