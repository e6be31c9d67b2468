#include "eldr/file.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace eldr {

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return DataLoss("error reading '{}'", path);
  return ss.str();
}

Status WriteFileAtomically(const std::string& path, std::string_view data) {
  // Write to a temporary sibling and rename, so a crash never leaves a half-written file where a
  // router might load it.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Unavailable("cannot write '{}'", tmp);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) return DataLoss("error writing '{}'", tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Unavailable("cannot rename '{}' to '{}'", tmp, path);
  }
  return Status::Ok();
}

}  // namespace eldr
