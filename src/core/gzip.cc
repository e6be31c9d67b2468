#include "eldr/gzip.h"

#include <zlib.h>

#include <climits>

namespace eldr {

bool IsGzip(std::string_view b) {
  return b.size() >= 2 && static_cast<uint8_t>(b[0]) == 0x1f && static_cast<uint8_t>(b[1]) == 0x8b;
}

Result<std::string> GzipMember(std::string_view data, int level) {
  if (data.size() > UINT_MAX / 2) return ResourceExhausted("gzip: {} bytes at once", data.size());
  z_stream zs{};
  // windowBits 15 + 16: a gzip wrapper, not zlib's.
  if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return Internal("zlib: deflateInit2 failed");
  }
  std::string out(deflateBound(&zs, static_cast<uLong>(data.size())), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  out.resize(out.size() - zs.avail_out);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) return Internal("zlib: deflate failed ({})", rc);
  return out;
}

Result<std::string> Gunzip(std::string_view in, const GunzipOptions& o, GunzipInfo* info) {
  if (in.size() > UINT_MAX) {
    return ResourceExhausted("gzip data of {} bytes is too large", in.size());
  }
  GunzipInfo local;
  GunzipInfo& gi = info != nullptr ? *info : local;
  gi = {};
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return Internal("zlib: inflateInit2 failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  size_t member_start_out = 0;  // out.size() when the current member began
  size_t member_start_in = 0;   // its offset in `in`
  char buf[1 << 16];
  Status err;
  for (;;) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (out.size() > o.max_output) {
      err = ResourceExhausted("gzip data inflates to more than {} bytes", o.max_output);
      break;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_STREAM_END) {
      ++gi.members;
      if (zs.avail_in == 0) break;  // complete
      if (zs.avail_in >= 2 && zs.next_in[0] == 0x1f && zs.next_in[1] == 0x8b) {
        member_start_out = out.size();
        member_start_in = in.size() - zs.avail_in;
        inflateReset(&zs);  // another member follows
        continue;
      }
      if (o.allow_truncated_tail && zs.avail_in == 1 && zs.next_in[0] == 0x1f) {
        gi.truncated_bytes = 1;
        break;
      }
      err = DataLoss("corrupt gzip: {} trailing bytes after the end of the stream", zs.avail_in);
      break;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
      if (o.allow_truncated_tail) {
        out.resize(member_start_out);
        gi.truncated_bytes = in.size() - member_start_in;
        break;
      }
      err = DataLoss(
          "corrupt gzip: truncated (the data ends after {} bytes, before the end of the stream "
          "and its 8-byte trailer)",
          in.size());
      break;
    }
    if (rc == Z_MEM_ERROR) {
      err = ResourceExhausted("zlib: out of memory");
      break;
    }
    err = DataLoss("corrupt gzip: {}", zs.msg != nullptr ? zs.msg : "inflate failed");
    break;
  }
  inflateEnd(&zs);
  if (!err.ok()) return Error{err};
  return out;
}

}  // namespace eldr
