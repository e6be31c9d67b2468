// -----------------------------------------------------------------------------
// File: net/wire.h
// -----------------------------------------------------------------------------
// HTTP and OpenAI wire vocabulary shared by every network part (the router proxy, the engine
// emulator, the load generator): URL parsing, message heads, OpenAI-style error bodies. Nothing
// here parses a request body: each part parses what it receives with its own code, so that the
// emulator stays an independent check of the proxy.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "eldr/status.h"

namespace eldr::net {

struct HostPort {
  std::string host;  // IPv6 literals without brackets
  int port = 0;
};

// "http://host:port" (or "host:port", a trailing '/' allowed) -> host, port. https and paths are
// rejected with InvalidArgument naming the URL. With `allow_port_zero`, port 0 (any free port)
// is accepted; otherwise the port must be in [1, 65535].
Result<HostPort> ParseHttpUrl(std::string_view url, bool allow_port_zero = false);

// The value of a Host header for host:port; an IPv6 literal is bracketed ("[::1]:8000").
std::string HostHeaderValue(std::string_view host, int port);

// The reason phrase of a status ("Bad Gateway"); "Unknown" for statuses it does not list.
std::string_view ReasonPhrase(int status);

// "HTTP/1.1 status reason" with Server: `server`, Content-Type and Content-Length, and
// "Connection: close" when !keep_alive, then `extra_headers` verbatim (complete
// "Name: value\r\n" lines, e.g. "Allow: GET\r\n"). Arguments must be valid header values (no CR
// or LF outside the extra lines' terminators).
std::string ResponseHead(int status, std::string_view content_type, size_t content_length,
                         bool keep_alive, std::string_view server = "eldr",
                         std::string_view extra_headers = {});

// {"error":{"message":...,"type":...,"param":null,"code":status}}
std::string OpenAiErrorBody(int status, std::string_view message, std::string_view type);
// "data: {error body}\n\n": the terminal event of a stream that failed after its first byte.
std::string SseErrorEvent(int status, std::string_view message, std::string_view type);
// The OpenAI error type for an HTTP status (400 invalid_request_error, 429 rate_limit_error, ...).
std::string_view ErrorTypeFor(int status);

// Constant-time comparison of two secrets (API keys): the time taken depends only on the lengths.
bool SecretEquals(std::string_view a, std::string_view b);

// The token of an "Authorization: Bearer <token>" header value (scheme case-insensitive, RFC
// 6750), or an empty view when the value is not a Bearer credential.
std::string_view BearerToken(std::string_view authorization);

// True when an Authorization header value is "Bearer <token>": the scheme matched
// case-insensitively (RFC 9110 section 11.1), the token compared in constant time (no early exit
// on the first differing byte, so its bytes cannot be found by timing). An empty token never
// matches.
bool BearerMatches(std::string_view header, std::string_view token);

}  // namespace eldr::net
