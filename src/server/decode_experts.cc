#include "eldr/server/decode_experts.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <utility>

#include "eldr/payload.h"
#include "eldr/server/json_scan.h"

namespace eldr::server {
namespace {

bool IsNull(std::string_view raw) { return raw.empty() || raw == "null"; }

// End of the first complete SSE event in s (just past its blank line), or npos. A blank line is
// "\n\n" or "\n\r\n": engines send LF, a proxy in between may send CRLF.
size_t EventEnd(std::string_view s) {
  for (size_t i = s.find('\n'); i != std::string_view::npos; i = s.find('\n', i + 1)) {
    if (i + 1 < s.size() && s[i + 1] == '\n') return i + 2;
    if (i + 2 < s.size() && s[i + 1] == '\r' && s[i + 2] == '\n') return i + 3;
  }
  return std::string_view::npos;
}

// The JSON text of an event's single data line, or empty.
std::string_view EventData(std::string_view ev) {
  constexpr std::string_view kData = "data:";
  if (!ev.starts_with(kData)) return {};
  std::string_view d = ev.substr(kData.size());
  if (!d.empty() && d.front() == ' ') d.remove_prefix(1);
  const size_t nl = d.find('\n');
  if (nl != std::string_view::npos) d = d.substr(0, nl);
  if (!d.empty() && d.back() == '\r') d.remove_suffix(1);
  return d.starts_with('{') ? d : std::string_view();
}

// `json` without sglext.routed_experts, and without sglext itself when nothing else was in it.
Result<std::string> StripSglext(std::string_view json) {
  ELDR_ASSIGN_OR_RETURN(std::string_view ext, JsonMember(json, "sglext"));
  if (IsNull(ext) || ext.front() != '{') return std::string(json);
  ELDR_ASSIGN_OR_RETURN(std::string inner, JsonWithoutMember(ext, "routed_experts"));
  if (inner == "{}") return JsonWithoutMember(json, "sglext");
  const size_t at = static_cast<size_t>(ext.data() - json.data());
  std::string out(json.substr(0, at));
  out += inner;
  out.append(json.substr(at + ext.size()));
  return out;
}

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// `text` without the member `"key": value`, where `value` is a view into `text` of a member's
// value found by a validated scan: the cut is made from the spans alone, without scanning the
// (megabytes long) text again. Nullopt when the key is not spelled plainly (escapes); the
// caller then takes the scanning way.
std::optional<std::string> CutMember(std::string_view text, std::string_view value,
                                     std::string_view key) {
  const size_t vb = static_cast<size_t>(value.data() - text.data()), ve = vb + value.size();
  size_t i = vb;
  while (i > 0 && IsWs(text[i - 1])) --i;
  if (i == 0 || text[i - 1] != ':') return std::nullopt;
  --i;
  while (i > 0 && IsWs(text[i - 1])) --i;
  const size_t klen = key.size() + 2;
  if (i < klen + 1 || text[i - 1] != '"' || text[i - klen] != '"' ||
      text.substr(i - klen + 1, key.size()) != key) {
    return std::nullopt;
  }
  const size_t kb = i - klen;
  size_t before = kb;
  while (before > 0 && IsWs(text[before - 1])) --before;
  // Only a key starts right after '{' or ','; anything else was the tail of a longer string.
  if (before == 0 || (text[before - 1] != '{' && text[before - 1] != ',')) return std::nullopt;
  size_t after = ve;
  while (after < text.size() && IsWs(text[after])) ++after;
  size_t cut_b = kb, cut_e = ve;
  if (after < text.size() && text[after] == ',') {
    cut_e = after + 1;  // a member follows: its comma goes
  } else if (text[before - 1] == ',') {
    cut_b = before - 1;  // the last member: the comma before it goes
  }
  std::string out;
  out.reserve(text.size() - (cut_e - cut_b));
  out.append(text.substr(0, cut_b));
  out.append(text.substr(cut_e));
  return out;
}

// `json` without sglext.routed_experts (sglext itself when nothing else was in it), given the
// two values' spans from Collect.
std::optional<std::string> CutSglext(std::string_view json, std::string_view ext,
                                     std::string_view re) {
  std::optional<std::string> inner = CutMember(ext, re, "routed_experts");
  if (!inner) return std::nullopt;
  if (inner->find_first_not_of("{} \t\r\n") == std::string::npos) {
    return CutMember(json, ext, "sglext");
  }
  const size_t at = static_cast<size_t>(ext.data() - json.data());
  std::string out(json.substr(0, at));
  out += *inner;
  out.append(json.substr(at + ext.size()));
  return out;
}

}  // namespace

DecodeExpertsTap::DecodeExpertsTap(DecodeExpertsTapOptions options) : o_(options) {}

DecodeExpertsTap::Spans DecodeExpertsTap::Collect(std::string_view json) {
  if (error_.code() == StatusCode::kResourceExhausted) return {};
  auto note = [this](Status s) -> Spans {
    if (error_.ok()) error_ = std::move(s);
    return {};
  };
  const bool sglang = o_.format == DecodeExpertsFormat::kSglang;
  // One pass over the body for the field's container and the usage.
  const std::string_view keys[] = {sglang ? "sglext" : "choices", "usage"};
  std::string_view vals[2];
  if (Status st = JsonMembers(json, keys, vals); !st.ok()) {
    return note(st.WithContext("decode response"));
  }
  ReadUsage(vals[1]);
  Spans sp;
  if (sglang) {
    sp.ext = vals[0];
    if (IsNull(sp.ext)) return {};
    if (sp.ext.front() != '{') {
      return note(InvalidArgument("decode response: sglext is not an object"));
    }
    auto re = JsonMember(sp.ext, "routed_experts");
    if (!re) return note(re.error().WithContext("sglext"));
    if (IsNull(*re)) return {};
    sp.re = *re;
    auto s = JsonStringValue(sp.re);
    if (!s) return note(s.error().WithContext("sglext.routed_experts"));
    kept_ += s->size();
    payloads_.push_back(std::move(*s));
  } else {
    const std::string_view choices = vals[0];
    if (IsNull(choices) || choices.front() != '[') return {};
    auto c0 = JsonElement(choices, 0);
    if (!c0 || c0->empty() || c0->front() != '{') return {};
    auto re = JsonMember(*c0, "routed_experts");
    if (!re) return note(re.error().WithContext("choices[0]"));
    const std::string_view field = *re;
    if (IsNull(field) || field.front() != '[') return {};
    // An empty list is what a prefill-only reply carries: nothing generated.
    if (field.find_first_not_of("[] \t\r\n") == std::string_view::npos) return {};
    kept_ += field.size();
    payloads_.emplace_back(field);
    sp.re = field;
  }
  if (kept_ > o_.max_bytes) {
    payloads_.clear();
    return note(
        ResourceExhausted("the decode engine's routed experts exceed {} bytes", o_.max_bytes)
            .error());
  }
  return sp;
}

void DecodeExpertsTap::ReadUsage(std::string_view usage) {
  if (IsNull(usage) || usage.front() != '{') return;
  if (auto pt = JsonMember(usage, "prompt_tokens"); pt && !pt->empty()) {
    int64_t v = -1;
    const auto [p, ec] = std::from_chars(pt->data(), pt->data() + pt->size(), v);
    if (ec == std::errc() && p == pt->data() + pt->size() && v >= 0) usage_prompt_ = v;
  }
}

std::string DecodeExpertsTap::Stripped(std::string_view json, const Spans& sp) const {
  std::optional<std::string> out = CutSglext(json, sp.ext, sp.re);
  if (out) return std::move(*out);
  auto scanned = StripSglext(json);  // a key spelled with escapes
  return scanned ? std::move(*scanned) : std::string(json);
}

std::string DecodeExpertsTap::Body(std::string body) {
  const Spans sp = Collect(body);
  if (!o_.strip || sp.re.empty() || o_.format != DecodeExpertsFormat::kSglang) return body;
  return Stripped(body, sp);
}

std::string DecodeExpertsTap::Event(std::string_view ev) {
  // Only events that can carry the field or the usage are parsed: every token's event passes
  // untouched.
  const bool field = ev.find("routed_experts") != std::string_view::npos;
  if (!field && ev.find("\"usage\"") == std::string_view::npos) return std::string(ev);
  const std::string_view data = EventData(ev);
  if (data.empty()) return std::string(ev);
  const Spans sp = Collect(data);  // the usage too
  if (!o_.strip || sp.re.empty() || o_.format != DecodeExpertsFormat::kSglang) {
    return std::string(ev);
  }
  const size_t at = static_cast<size_t>(data.data() - ev.data());
  std::string out(ev.substr(0, at));
  out += Stripped(data, sp);
  out.append(ev.substr(at + data.size()));
  return out;
}

void DecodeExpertsTap::Feed(std::string_view piece, std::string* forward) {
  if (error_.code() == StatusCode::kResourceExhausted) {
    forward->append(piece);
    return;
  }
  if (!o_.strip) forward->append(piece);
  // The search for a blank line resumes where the last one stopped (less the two bytes a boundary
  // may straddle): a large event arriving in many reads is scanned once, not once per read.
  size_t search = scanned_ > 2 ? scanned_ - 2 : 0;
  pending_.append(piece);
  size_t used = 0;
  while (true) {
    const size_t end = EventEnd(std::string_view(pending_).substr(search));
    if (end == std::string_view::npos) break;
    std::string ev = Event(std::string_view(pending_).substr(used, search + end - used));
    if (o_.strip) forward->append(ev);
    used = search = search + end;
  }
  pending_.erase(0, used);
  scanned_ = pending_.size();
  if (pending_.size() > o_.max_bytes) {
    // An event this large is not one the tap can hold: give up, losing nothing.
    if (o_.strip) forward->append(pending_);
    pending_.clear();
    scanned_ = 0;
    payloads_.clear();
    error_ = ResourceExhausted("an SSE event of the decode stream exceeds {} bytes", o_.max_bytes)
                 .error();
  }
}

void DecodeExpertsTap::Finish(std::string* forward) {
  if (pending_.empty()) return;
  std::string ev = Event(pending_);
  if (o_.strip) forward->append(ev);
  pending_.clear();
  scanned_ = 0;
}

Result<ExpertCounts> DecodeExpertsTap::Counts(const ModelGeometry& g, int64_t prompt_tokens,
                                              int64_t output_tokens, bool output_exact) const {
  if (!error_.ok()) return Error{error_};
  if (payloads_.empty()) return NotFound("the decode engine returned no routed experts");
  if (o_.format == DecodeExpertsFormat::kVllmLists) {
    ExpertCounts sum(g.moe_layers, g.experts);
    int64_t rows = 0;
    for (const std::string& p : payloads_) {
      ELDR_ASSIGN_OR_RETURN(PickTable t, ParsePickListJson(p, g));
      rows += t.tokens();
      ELDR_RETURN_IF_ERROR(sum.Add(t.Counts()));
    }
    if (output_exact && rows > output_tokens) {
      return InvalidArgument("choices[0].routed_experts has {} rows for {} generated tokens", rows,
                             output_tokens);
    }
    return sum;
  }
  const int64_t prompt = usage_prompt_ >= 0 ? usage_prompt_ : prompt_tokens;
  if (prompt < 0) return FailedPrecondition("the prompt's length is unknown");
  if (prompt < o_.start_row) {
    return InvalidArgument("routed_experts_start_len {} exceeds the prompt's {} tokens",
                           o_.start_row, prompt);
  }
  PayloadOptions po;
  po.skip_rows = prompt - o_.start_row;
  const std::string& b64 = payloads_.back();  // SGLang sends one; a repeat would be the same
  std::optional<PickTable> table;
  Status first;
  for (const int layers : {g.total_layers, g.moe_layers}) {
    po.payload_layers = layers;
    auto t = DecodeSglangRoutedExperts(b64, g, po);
    if (t) {
      table = std::move(*t);
      break;
    }
    if (first.ok()) first = t.error();
  }
  if (!table) return Error{first.WithContext("sglext.routed_experts of the decode leg")};
  // The engine covers [start_len, seqlen - 1): one row per generated token but the last.
  if (output_exact && output_tokens >= 1 && table->tokens() != output_tokens - 1) {
    return InvalidArgument(
        "sglext.routed_experts has {} rows after the prompt for {} generated tokens (expected "
        "{})",
        table->tokens(), output_tokens, output_tokens - 1);
  }
  return table->Counts();
}

}  // namespace eldr::server
