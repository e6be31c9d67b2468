// -----------------------------------------------------------------------------
// File: server/json_scan.h
// -----------------------------------------------------------------------------
// Finds values inside JSON text without building a tree: a prefill response may carry megabytes
// of routed-expert data, of which the router needs a few small fields and
// one large string or list that it decodes in place. The scanner validates the structure it walks
// (strings, escapes, nesting, literals, numbers) and reports malformed input with an offset.
//
// Thread-safety: pure functions over caller-owned text; results point into that text.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "eldr/status.h"

namespace eldr::server {

// The raw text of member `key` of the JSON object `object` (leading whitespace allowed), or an
// empty view if the object has no such member. InvalidArgument if `object` is not a well-formed
// object. Keys are compared after unescaping.
Result<std::string_view> JsonMember(std::string_view object, std::string_view key);

// One pass over `object` for several keys: values[i] = raw text of member keys[i] or empty.
// REQUIRES: values.size() == keys.size().
Status JsonMembers(std::string_view object, std::span<const std::string_view> keys,
                   std::span<std::string_view> values);

// `object` without its member `key` (every occurrence), the other members' text unchanged and
// in order; `object` itself when it has no such member. InvalidArgument if `object` is not a
// well-formed object. Used to take a field the router asked for out of what the client sees.
Result<std::string> JsonWithoutMember(std::string_view object, std::string_view key);

// The raw text of element `index` of the JSON array `array`, or an empty view if it is shorter.
// Validates the array only up to that element (use it on text already validated whole).
Result<std::string_view> JsonElement(std::string_view array, size_t index);

// The contents of a JSON string value (the raw text, quotes included), unescaped.
Result<std::string> JsonStringValue(std::string_view raw);

// Length of the well-formed JSON value starting at text[0] (after whitespace), or an error.
Result<size_t> JsonValueLength(std::string_view text);

}  // namespace eldr::server
