// The capture writer (server/capture.h) and what reads its files: the calibration parser and the
// gzip reader (gzip.h). The files it writes must be exactly what `eldr fit -i` reads.
#include "eldr/server/capture.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "eldr/calibration.h"
#include "eldr/gzip.h"
#include "eldr/rng.h"
#include "status_matchers.h"
#include "test_util.h"

namespace eldr::server {
namespace {

using ::testing::HasSubstr;

namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class CaptureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("eldr_capture_{}_{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    g_ = *FindModel("gpt-oss-20b");
  }
  void TearDown() override { fs::remove_all(dir_); }

  CaptureRecord Record(int i) {
    Rng rng(100 + i);
    CaptureRecord r;
    r.id = fmt::format("req-{}", i);
    r.label = i % 2 ? "code" : "";
    r.prefill = ExpertCounts(g_.moe_layers, g_.experts);
    const int tokens = 3 + i % 5;
    for (int t = 0; t < tokens; ++t) {
      EXPECT_TRUE(r.prefill.AddToken(testing::RandomPicks(g_, 1, rng), g_.top_k).ok());
    }
    r.prompt_tokens = tokens;
    r.output_tokens = 10 + i;
    r.arrival_us = 1'700'000'000'000'000 + i * 1000;
    r.decoder = fmt::format("http://10.0.0.{}:8000", i % 3);
    return r;
  }

  Result<CalibrationSet> ReadBack(const fs::path& p, GunzipInfo* info = nullptr) {
    GunzipOptions go;
    go.allow_truncated_tail = info != nullptr;
    ELDR_ASSIGN_OR_RETURN(std::string text, Gunzip(Slurp(p), go, info));
    return ParseCalibrationJsonl(text);
  }

  fs::path dir_;
  ModelGeometry g_;
};

TEST_F(CaptureTest, RecordsReadBackAsCalibrationWithTheirReplayFields) {
  CaptureOptions o;
  o.path = (dir_ / "cap.jsonl.gz").string();
  auto w = CaptureWriter::Open(o, g_, /*background=*/false);
  ASSERT_THAT(w, IsOk());
  for (int i = 0; i < 7; ++i) ASSERT_TRUE((*w)->Offer(Record(i)));
  ASSERT_TRUE((*w)->Flush().ok());
  EXPECT_EQ((*w)->counts().written, 7u);
  auto set = ReadBack(o.path);
  ASSERT_THAT(set, IsOk());
  EXPECT_EQ(set->model, g_.name);  // from the header line the writer wrote
  ASSERT_EQ(set->requests.size(), 7u);
  EXPECT_TRUE(set->HasReplayFields());
  for (int i = 0; i < 7; ++i) {
    const CaptureRecord r = Record(i);
    EXPECT_EQ(set->requests[i].id, r.id);
    EXPECT_EQ(set->requests[i].label, r.label);
    EXPECT_EQ(set->requests[i].prefill, r.prefill);
    EXPECT_TRUE(set->requests[i].decode.empty());
    EXPECT_EQ(set->meta[i].prompt_tokens, r.prompt_tokens);
    EXPECT_EQ(set->meta[i].output_tokens, r.output_tokens);
    EXPECT_EQ(set->meta[i].arrival_us, r.arrival_us);
    EXPECT_EQ(set->meta[i].decoder, r.decoder);
  }
}

TEST_F(CaptureTest, StringsAreEscaped) {
  CaptureRecord r = Record(1);
  r.id = "a\"b\\c\nd";
  r.label = "x\"y";
  auto set = ParseCalibrationJsonl(CaptureRecordJson(r), &g_);
  ASSERT_THAT(set, IsOk());
  EXPECT_EQ(set->requests[0].id, r.id);
  EXPECT_EQ(set->requests[0].label, r.label);
}

TEST_F(CaptureTest, AFullQueueDropsAndCountsWithoutBlocking) {
  CaptureOptions o;
  o.path = (dir_ / "cap.gz").string();
  o.queue_records = 2;
  auto w = CaptureWriter::Open(o, g_, false);
  ASSERT_TRUE(w.has_value());
  EXPECT_TRUE((*w)->Offer(Record(0)));
  EXPECT_TRUE((*w)->Offer(Record(1)));
  EXPECT_FALSE((*w)->Offer(Record(2)));
  EXPECT_FALSE((*w)->Offer(Record(3)));
  EXPECT_EQ((*w)->counts().dropped_queue, 2u);
  ASSERT_TRUE((*w)->Flush().ok());
  EXPECT_TRUE((*w)->Offer(Record(4)));  // room again
  (*w)->Close();
  EXPECT_FALSE((*w)->Offer(Record(5)));  // closed
  const auto c = (*w)->counts();
  EXPECT_EQ(c.written, 3u);
  EXPECT_EQ(c.dropped_queue, 3u);
  auto set = ReadBack(o.path);
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->requests.size(), 3u);
}

TEST_F(CaptureTest, RotationBoundsTheFilesAndEveryFileParses) {
  CaptureOptions o;
  o.path = (dir_ / "cap.gz").string();
  o.max_file_bytes = 4096;
  o.max_files = 3;
  o.batch_records = 4;
  auto w = CaptureWriter::Open(o, g_, false);
  ASSERT_TRUE(w.has_value());
  size_t offered = 0;
  for (int round = 0; round < 40; ++round) {
    for (int i = 0; i < 4; ++i, ++offered) ASSERT_TRUE((*w)->Offer(Record(round * 4 + i)));
    ASSERT_TRUE((*w)->Flush().ok());
  }
  const auto c = (*w)->counts();
  EXPECT_EQ(c.written, offered);
  EXPECT_GE(c.rotations, 2u);
  EXPECT_TRUE(fs::exists(o.path));
  EXPECT_TRUE(fs::exists(o.path + ".1"));
  EXPECT_TRUE(fs::exists(o.path + ".2"));
  EXPECT_FALSE(fs::exists(o.path + ".3"));
  size_t kept = 0;
  for (const auto& p : {o.path + ".2", o.path + ".1", o.path}) {
    // A file passes max_file_bytes by at most one batch.
    EXPECT_LT(fs::file_size(p), static_cast<uintmax_t>(o.max_file_bytes) + 4096);
    if (fs::file_size(p) == 0) continue;  // a fresh active file: nothing written yet
    auto set = ReadBack(p);
    ASSERT_TRUE(set.has_value()) << p << ": " << set.error().message();
    kept += set->requests.size();
  }
  EXPECT_LT(kept, offered);  // the oldest were deleted
  EXPECT_GT(kept, 0u);
}

TEST_F(CaptureTest, AFailingDiskDropsAndCountsAndTheWriterCarriesOn) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  CaptureOptions o;
  o.path = "/dev/full";
  auto w = CaptureWriter::Open(o, g_, false);
  ASSERT_THAT(w, IsOk());  // opening works; every write fails (ENOSPC)
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*w)->Offer(Record(i)));
  EXPECT_THAT((*w)->Flush(),
              StatusIs(StatusCode::kUnavailable, HasSubstr("write: No space left on device")));
  EXPECT_TRUE((*w)->Offer(Record(3)));  // still accepting, still counting
  EXPECT_THAT((*w)->Flush(),
              StatusIs(StatusCode::kUnavailable, HasSubstr("write: No space left on device")));
  const auto c = (*w)->counts();
  EXPECT_EQ(c.dropped_write, 4u);
  EXPECT_EQ(c.written, 0u);
  EXPECT_EQ(c.dropped_queue, 0u);
}

TEST_F(CaptureTest, AnUnopenablePathIsAStartUpError) {
  CaptureOptions o;
  o.path = (dir_ / "no" / "such" / "dir" / "cap.gz").string();
  auto w = CaptureWriter::Open(o, g_, false);
  EXPECT_THAT(w, StatusIs(StatusCode::kUnavailable, HasSubstr("no/such/dir")));
}

TEST_F(CaptureTest, AFileCutMidBatchKeepsEveryCompleteBatch) {
  CaptureOptions o;
  o.path = (dir_ / "cap.gz").string();
  o.batch_records = 3;
  auto w = CaptureWriter::Open(o, g_, false);
  ASSERT_TRUE(w.has_value());
  for (int i = 0; i < 9; ++i) ASSERT_TRUE((*w)->Offer(Record(i)));
  ASSERT_TRUE((*w)->Flush().ok());  // 3 members of 3 records (the header in the first)
  (*w)->Close();
  std::string bytes = Slurp(o.path);
  bytes.resize(bytes.size() - 10);  // the last member loses its trailer and some data
  const fs::path cut = dir_ / "cut.gz";
  std::ofstream(cut, std::ios::binary) << bytes;
  // Strict reading refuses it...
  EXPECT_THAT(Gunzip(bytes), StatusIs(StatusCode::kDataLoss, HasSubstr("corrupt gzip: truncated")));
  // ... tolerant reading keeps the complete batches and says what it dropped.
  GunzipInfo info;
  auto set = ReadBack(cut, &info);
  ASSERT_THAT(set, IsOk());
  EXPECT_EQ(set->requests.size(), 6u);
  EXPECT_EQ(info.members, 2);
  EXPECT_GT(info.truncated_bytes, 0u);
}

TEST_F(CaptureTest, AppendingUnderAnotherModelIsRefusedOnRead) {
  CaptureOptions o;
  o.path = (dir_ / "cap.gz").string();
  {
    auto w = CaptureWriter::Open(o, g_, false);
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE((*w)->Offer(Record(0)));
  }  // the destructor flushes
  {
    auto w = CaptureWriter::Open(o, *FindModel("qwen3-30b-a3b"), false);
    ASSERT_TRUE(w.has_value());
    CaptureRecord r = Record(0);
    r.prefill = ExpertCounts(48, 128);
    ASSERT_TRUE((*w)->Offer(std::move(r)));
  }
  auto set = ReadBack(o.path);
  ASSERT_THAT(set, StatusIs(StatusCode::kFailedPrecondition,
                            HasSubstr("calibration data for Qwen3-30B-A3B, not GPT-OSS-20B")));
}

TEST_F(CaptureTest, BackgroundThreadWritesOnClose) {
  CaptureOptions o;
  o.path = (dir_ / "cap.gz").string();
  o.flush_interval_ms = 60'000;  // never by timer in this test
  auto w = CaptureWriter::Open(o, g_, /*background=*/true);
  ASSERT_TRUE(w.has_value());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*w)->Offer(Record(i)));
  (*w)->Close();
  EXPECT_EQ((*w)->counts().written, 5u);
  auto set = ReadBack(o.path);
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->requests.size(), 5u);
}

TEST(CaptureOptionsTest, ValidateNamesTheKey) {
  CaptureOptions o;
  o.fraction = 1.5;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("capture_fraction")));
  o = {};
  o.max_file_bytes = 10;
  EXPECT_THAT(o.Validate(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("capture_max_file_bytes")));
  o = {};
  o.max_files = 0;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("capture_max_files")));
  EXPECT_TRUE(CaptureOptions{}.Validate().ok());
}

// ---- OutputTokenCounter --------------------------------------------------------------------

// Feeds `body` split at every position, and in one piece: the count must not depend on where
// the network cut it.
void ExpectCountEverySplit(std::string_view body, int64_t want, bool exact) {
  for (size_t cut = 0; cut <= body.size(); ++cut) {
    OutputTokenCounter c;
    c.Feed(body.substr(0, cut));
    c.Feed(body.substr(cut));
    ASSERT_EQ(c.count(), want) << "cut at " << cut;
    ASSERT_EQ(c.exact(), exact) << "cut at " << cut;
  }
  OutputTokenCounter bytewise;
  for (char ch : body) bytewise.Feed(std::string_view(&ch, 1));
  EXPECT_EQ(bytewise.count(), want);
}

TEST(OutputTokenCounterTest, NonStreamingUsage) {
  ExpectCountEverySplit(
      R"({"id":"x","choices":[{"text":"hi"}],"usage":{"prompt_tokens":5,"total_tokens":17,)"
      R"("completion_tokens":12}})",
      12, true);
}

TEST(OutputTokenCounterTest, StreamWithoutUsageCountsEventsWithChoices) {
  const std::string body =
      "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\n"
      "data: {\"choices\": [ {\"index\":0,\"text\":\"b\"}]}\n\n"
      "data: {\"choices\":[],\"sglext\":{\"routed_experts\":\"AAAA\"}}\n\n"
      "data: {\"choices\":[{\"index\":0,\"text\":\"c\"}]}\n\n"
      "data: [DONE]\n\n";
  ExpectCountEverySplit(body, 3, false);
}

TEST(OutputTokenCounterTest, StreamUsageChunkWins) {
  // vLLM with stream_options.include_usage: a last chunk with "choices":[] and the usage.
  const std::string body =
      "data: {\"choices\":[{\"text\":\"a\"}]}\n\n"
      "data: {\"choices\":[{\"text\":\"b\"}]}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2048}}\n\n"
      "data: [DONE]\n\n";
  ExpectCountEverySplit(body, 2048, true);
}

TEST(OutputTokenCounterTest, GarbageNeverCounts) {
  OutputTokenCounter c;
  c.Feed("\"completion_tokens\": -4 \"completion_tokens\":abc data: x\n data:{\"choices\":[]}\n");
  EXPECT_EQ(c.count(), 0);
  EXPECT_FALSE(c.exact());
}

// Regression (fuzz/http_fuzz.cc): a usage value behind many spaces, or one with many digits, was
// found or lost depending on where the body was cut (the kept tail was a fixed 43 bytes). A value
// now counts only when it ends within 32 bytes of its key, wherever the cuts fall.
TEST(OutputTokenCounterTest, CountDoesNotDependOnCutsAroundLongValues) {
  ExpectCountEverySplit(R"({"usage":{"completion_tokens":)" + std::string(28, ' ') + "42}}", 42,
                        true);
  ExpectCountEverySplit(R"({"usage":{"completion_tokens":)" + std::string(40, '0') + "7}}", 0,
                        false);
}

}  // namespace
}  // namespace eldr::server
