#include "eldr/net/wire.h"

#include <boost/beast/http/status.hpp>
#include <boost/json.hpp>
#include <charconv>

namespace eldr::net {

Result<HostPort> ParseHttpUrl(std::string_view url, bool allow_port_zero) {
  std::string_view rest = url;
  if (rest.starts_with("https://")) {
    return InvalidArgument("'{}': https upstreams are not supported (use http)", url);
  }
  if (rest.starts_with("http://")) rest.remove_prefix(7);
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) {
    return InvalidArgument("'{}': expected http://host:port without a path", url);
  }
  const size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos)
    return InvalidArgument("'{}': expected http://host:port", url);
  HostPort hp;
  hp.host = std::string(rest.substr(0, colon));
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']') {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  const std::string_view p = rest.substr(colon + 1);
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), hp.port);
  if (ec != std::errc() || ptr != p.data() + p.size()) {
    return InvalidArgument("'{}': bad port '{}'", url, p);
  }
  if (hp.host.empty()) return InvalidArgument("'{}': empty host", url);
  if (hp.port < (allow_port_zero ? 0 : 1) || hp.port > 65535) {
    return InvalidArgument("'{}': port {} out of range", url, hp.port);
  }
  return hp;
}

std::string HostHeaderValue(std::string_view host, int port) {
  return host.find(':') == std::string_view::npos ? fmt::format("{}:{}", host, port)
                                                  : fmt::format("[{}]:{}", host, port);
}

std::string_view ReasonPhrase(int status) {
  const auto s = boost::beast::http::int_to_status(static_cast<unsigned>(status));
  return s == boost::beast::http::status::unknown ? "Unknown"
                                                  : boost::beast::http::obsolete_reason(s);
}

std::string ResponseHead(int status, std::string_view content_type, size_t content_length,
                         bool keep_alive, std::string_view server, std::string_view extra_headers) {
  std::string h;
  h.reserve(128 + content_type.size() + extra_headers.size());
  fmt::format_to(std::back_inserter(h),
                 "HTTP/1.1 {} {}\r\nServer: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n"
                 "{}{}\r\n",
                 status, ReasonPhrase(status), server, content_type, content_length,
                 keep_alive ? "" : "Connection: close\r\n", extra_headers);
  return h;
}

std::string OpenAiErrorBody(int status, std::string_view message, std::string_view type) {
  namespace json = boost::json;
  json::object e{{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}};
  return json::serialize(json::object{{"error", std::move(e)}});
}

std::string SseErrorEvent(int status, std::string_view message, std::string_view type) {
  return "data: " + OpenAiErrorBody(status, message, type) + "\n\n";
}

std::string_view ErrorTypeFor(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable";
    case 502:
    case 504:
      return "upstream_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

bool SecretEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = a.size() < b.size() ? a.size() : b.size();
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string_view BearerToken(std::string_view v) {
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  if (v.size() < 7) return {};
  static constexpr std::string_view kScheme = "bearer ";
  for (size_t i = 0; i < kScheme.size(); ++i) {
    const char c = v[i] >= 'A' && v[i] <= 'Z' ? static_cast<char>(v[i] - 'A' + 'a') : v[i];
    if (c != kScheme[i]) return {};
  }
  v.remove_prefix(kScheme.size());
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool BearerMatches(std::string_view header, std::string_view token) {
  constexpr std::string_view kScheme = "bearer ";
  if (token.empty() || header.size() < kScheme.size() ||
      !boost::beast::iequals(header.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  std::string_view given = header.substr(kScheme.size());
  while (!given.empty() && given.front() == ' ') given.remove_prefix(1);
  unsigned char diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < token.size(); ++i) {
    diff |= static_cast<unsigned char>(token[i] ^ (i < given.size() ? given[i] : 0));
  }
  return diff == 0;
}

}  // namespace eldr::net
