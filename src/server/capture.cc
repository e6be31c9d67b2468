#include "eldr/server/capture.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "eldr/calibration.h"
#include "eldr/gzip.h"

namespace eldr::server {

namespace {

void AppendTable(std::string* out, const ExpertCounts& c) {
  out->push_back('[');
  char num[16];
  for (int l = 0; l < c.layers(); ++l) {
    if (l) out->push_back(',');
    out->push_back('[');
    const auto row = c.layer(l);
    for (size_t e = 0; e < row.size(); ++e) {
      if (e) out->push_back(',');
      auto [p, ec] = std::to_chars(num, num + sizeof num, row[e]);
      out->append(num, p);
    }
    out->push_back(']');
  }
  out->push_back(']');
}

void AppendString(std::string* out, std::string_view s) {
  *out += boost::json::serialize(boost::json::string_view(s.data(), s.size()));
}

std::string HeaderLine(const ModelGeometry& g) {
  boost::json::object h{{"format", kCalibrationFormat},
                        {"version", 1},
                        {"model", g.name},
                        {"geometry", boost::json::parse(ModelGeometryToJson(g))},
                        {"source", "eldr serve --capture"}};
  return boost::json::serialize(h) + "\n";
}

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unavailable("write: {}", std::strerror(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

Status CaptureOptions::Validate() const {
  if (!(fraction >= 0 && fraction <= 1)) {
    return InvalidArgument("capture_fraction must be in [0, 1], got {}", fraction);
  }
  if (max_file_bytes < 4096) {
    return InvalidArgument("capture_max_file_bytes must be >= 4096, got {}", max_file_bytes);
  }
  if (max_files < 1 || max_files > 1000) {
    return InvalidArgument("capture_max_files must be in [1, 1000], got {}", max_files);
  }
  if (queue_records < 1) {
    return InvalidArgument("capture_queue_records must be >= 1, got {}", queue_records);
  }
  if (batch_records < 1) {
    return InvalidArgument("capture_batch_records must be >= 1, got {}", batch_records);
  }
  if (flush_interval_ms < 1) {
    return InvalidArgument("capture_flush_interval_ms must be >= 1, got {}", flush_interval_ms);
  }
  return Status::Ok();
}

std::string CaptureRecordJson(const CaptureRecord& r) {
  std::string out;
  out.reserve(64 + r.prefill.data().size() * 3 * (r.decode ? 2 : 1));
  out += "{\"id\":";
  AppendString(&out, r.id);
  if (!r.label.empty()) {
    out += ",\"label\":";
    AppendString(&out, r.label);
  }
  out += ",\"prefill\":";
  AppendTable(&out, r.prefill);
  if (r.decode) {
    out += ",\"decode\":";
    AppendTable(&out, *r.decode);
  }
  fmt::format_to(std::back_inserter(out),
                 ",\"prompt_tokens\":{},\"output_tokens\":{},\"arrival_us\":{},\"decoder\":",
                 r.prompt_tokens, r.output_tokens, r.arrival_us);
  AppendString(&out, r.decoder);
  out += '}';
  return out;
}

// ---- OutputTokenCounter ------------------------------------------------------------------------

namespace {

constexpr std::string_view kUsageKey = "\"completion_tokens\"";
constexpr size_t kMaxLine = 4096;  // of an SSE line kept for ScanLine

// A usage value must end within this many bytes after its key (spaces, a colon, the digits and
// the character after them); anything longer is not a token count. The bound is what makes the
// count independent of how the body is split: Feed() keeps at most a key and this window between
// calls (fuzz/http_fuzz.cc checks it).
constexpr size_t kValueWindow = 32;
constexpr int64_t kIncomplete = -2;

// The value after `"completion_tokens"` at `pos` in `s` (spaces and a colon between): the count,
// -1 when there is none, or kIncomplete when `s` ends inside the window before the value does.
int64_t ValueAfterKey(std::string_view s, size_t pos) {
  const size_t from = pos + kUsageKey.size();
  const std::string_view w = s.substr(from, kValueWindow);
  size_t i = 0;
  while (i < w.size() && (w[i] == ' ' || w[i] == ':')) ++i;
  size_t j = i;
  while (j < w.size() && w[j] >= '0' && w[j] <= '9') ++j;
  if (j == w.size()) return w.size() < kValueWindow ? kIncomplete : -1;  // short: s ended
  int64_t v = -1;
  auto [p, ec] = std::from_chars(w.data() + i, w.data() + j, v);
  if (ec != std::errc() || p == w.data() + i) return -1;
  return v;
}

}  // namespace

void OutputTokenCounter::Feed(std::string_view bytes) {
  // The usage key, scanned over the previous tail plus this piece, so a split key is found.
  std::string scan = tail_;
  scan.append(bytes);
  // Kept for the next piece: the bytes that may begin a key, or from a key whose value is still
  // arriving (at most the key and its window).
  size_t keep_from = scan.size() > kUsageKey.size() - 1 ? scan.size() - (kUsageKey.size() - 1) : 0;
  for (size_t pos = scan.find(kUsageKey); pos != std::string::npos;
       pos = scan.find(kUsageKey, pos + 1)) {
    const int64_t v = ValueAfterKey(scan, pos);
    if (v == kIncomplete) {
      keep_from = std::min(keep_from, pos);
      break;  // the rest of `scan` is that key's value so far
    }
    if (v >= 0) usage_ = v;
  }
  tail_ = scan.substr(keep_from);
  for (char ch : bytes) {
    if (ch == '\n') {
      ScanLine(line_);
      line_.clear();
    } else if (line_.size() < kMaxLine) {
      line_.push_back(ch);  // beyond: truncated; the event's "choices" comes early in the line
    }
  }
}

void OutputTokenCounter::ScanLine(std::string_view line) {
  if (!line.starts_with("data:")) return;
  line.remove_prefix(5);
  while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  if (line.starts_with("[DONE]")) return;
  // An event with at least one choice; SGLang's and vLLM's usage-only chunks have "choices":[].
  const size_t c = line.find("\"choices\"");
  if (c == std::string_view::npos) return;
  size_t i = c + 9;
  while (i < line.size() && (line[i] == ' ' || line[i] == ':')) ++i;
  if (i + 1 < line.size() && line[i] == '[') {
    size_t j = i + 1;
    while (j < line.size() && line[j] == ' ') ++j;
    if (j < line.size() && line[j] != ']') ++events_;
  }
}

// ---- CaptureWriter -----------------------------------------------------------------------------

Result<std::unique_ptr<CaptureWriter>> CaptureWriter::Open(const CaptureOptions& options,
                                                           const ModelGeometry& geometry,
                                                           bool background) {
  ELDR_RETURN_IF_ERROR(options.Validate());
  if (options.path.empty()) return InvalidArgument("capture: no path given");
  std::unique_ptr<CaptureWriter> w(new CaptureWriter(options, geometry));
  {
    MutexLock io(&w->io_mu_);  // uncontended: nothing else sees w yet
    ELDR_RETURN_IF_ERROR(w->OpenActive());
  }
  if (background) w->thread_ = std::thread([p = w.get()] { p->Run(); });
  return w;
}

CaptureWriter::~CaptureWriter() {
  Close();
  if (fd_ >= 0) ::close(fd_);
}

Status CaptureWriter::OpenActive() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(o_.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) return Unavailable("capture: cannot open {}: {}", o_.path, std::strerror(errno));
  struct stat st {};
  file_bytes_ = ::fstat(fd_, &st) == 0 ? st.st_size : 0;
  // A header line leads the first batch written after every open: a file appended to by a
  // server started with another model then fails to parse instead of mixing shapes.
  header_pending_ = true;
  return Status::Ok();
}

bool CaptureWriter::Offer(CaptureRecord record) {
  {
    MutexLock lock(&mu_);
    if (!closed_ && queue_.size() < static_cast<size_t>(o_.queue_records)) {
      queue_.push_back(std::move(record));
      if (queue_.size() >= static_cast<size_t>(o_.batch_records)) cv_.Signal();
      return true;
    }
  }
  dropped_queue_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

Status CaptureWriter::RotateIfDue() {
  if (file_bytes_ < o_.max_file_bytes) return Status::Ok();
  namespace fs = std::filesystem;
  ::close(fd_);
  fd_ = -1;
  std::error_code ec;
  auto name = [&](int i) { return i == 0 ? o_.path : fmt::format("{}.{}", o_.path, i); };
  // PATH.(max_files-1) is the oldest kept; with max_files = 1 the active file is simply restarted.
  fs::remove(name(o_.max_files - 1), ec);
  for (int i = o_.max_files - 2; i >= 0; --i) {
    if (fs::exists(name(i), ec)) fs::rename(name(i), name(i + 1), ec);
    if (ec) return Unavailable("capture: rotating {}: {}", name(i), ec.message());
  }
  if (o_.max_files == 1) fs::remove(o_.path, ec);
  rotations_.fetch_add(1, std::memory_order_relaxed);
  return OpenActive();
}

Status CaptureWriter::WriteBatch(std::deque<CaptureRecord>& batch) {
  if (batch.empty()) return Status::Ok();
  std::string text = header_pending_ ? HeaderLine(g_) : std::string();
  for (const auto& r : batch) {
    text += CaptureRecordJson(r);
    text += '\n';
  }
  const size_t n = batch.size();
  batch.clear();
  Status s = fd_ >= 0 ? Status::Ok() : OpenActive();
  Result<std::string> member = s.ok() ? GzipMember(text, 6) : Result<std::string>(Error{s});
  if (member) s = WriteAll(fd_, *member);
  if (!member) s = member.error();
  if (!s.ok()) {
    const uint64_t before = dropped_write_.fetch_add(n, std::memory_order_relaxed);
    // A full disk fails every batch: say so once, then rarely.
    if (before == 0 || (before / 10000) != ((before + n) / 10000)) {
      spdlog::warn("event=capture_write_failed path={} dropped={} error=\"{}\"", o_.path,
                   before + n, s.message());
    }
    return s;
  }
  header_pending_ = false;
  file_bytes_ += static_cast<int64_t>(member->size());
  bytes_.fetch_add(member->size(), std::memory_order_relaxed);
  written_.fetch_add(n, std::memory_order_relaxed);
  return RotateIfDue();
}

Status CaptureWriter::Flush() {
  MutexLock io(&io_mu_);
  Status first;
  for (;;) {
    std::deque<CaptureRecord> batch;
    {
      MutexLock lock(&mu_);
      const size_t n = std::min(queue_.size(), static_cast<size_t>(o_.batch_records));
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (batch.empty()) return first;
    Status s = WriteBatch(batch);
    if (first.ok() && !s.ok()) first = s;
  }
}

void CaptureWriter::Run() {
  const auto interval = std::chrono::milliseconds(o_.flush_interval_ms);
  mu_.Lock();
  while (!closed_) {
    // Until closed, a full batch, or the flush interval (a wakeup without either waits on).
    const auto deadline = std::chrono::steady_clock::now() + interval;
    while (!closed_ && queue_.size() < static_cast<size_t>(o_.batch_records) &&
           cv_.WaitUntil(&mu_, deadline)) {
    }
    mu_.Unlock();
    (void)Flush();  // failures are counted and logged in WriteBatch
    mu_.Lock();
  }
  mu_.Unlock();
}

void CaptureWriter::Close() {
  {
    MutexLock lock(&mu_);
    if (closed_ && !thread_.joinable()) return;
    closed_ = true;
  }
  cv_.Signal();
  if (thread_.joinable()) thread_.join();
  (void)Flush();
  MutexLock io(&io_mu_);
  if (fd_ >= 0) ::fsync(fd_);
}

CaptureWriter::Counts CaptureWriter::counts() const {
  Counts c;
  c.written = written_.load(std::memory_order_relaxed);
  c.dropped_queue = dropped_queue_.load(std::memory_order_relaxed);
  c.dropped_write = dropped_write_.load(std::memory_order_relaxed);
  c.bytes = bytes_.load(std::memory_order_relaxed);
  c.rotations = rotations_.load(std::memory_order_relaxed);
  return c;
}

}  // namespace eldr::server
