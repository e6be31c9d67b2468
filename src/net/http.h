// Private: the Boost.Beast/Asio vocabulary shared by the network translation units (the proxy's
// src/server/{proxy,upstream,flow_vllm,flow_sglang}.cc, src/emu/emulator.cc, src/bench/load.cc).
// Beast is confined to those files to keep builds short; nothing here is part of a public
// header.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "eldr/status.h"

namespace eldr::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
inline constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

inline int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Resolves "host" and port once, synchronously (configuration time, not the request path).
inline Result<tcp::endpoint> Resolve(const std::string& host, int port) {
  asio::io_context ioc;
  tcp::resolver r(ioc);
  boost::system::error_code ec;
  auto results = r.resolve(host, std::to_string(port), ec);
  if (ec || results.empty()) {
    return Unavailable("cannot resolve '{}': {}", host, ec ? ec.message() : "no address");
  }
  return results.begin()->endpoint();
}

// Idle keep-alive upstream connections of one io_context (each thread runs its own, so a pool
// never hands a socket to another executor). The owner must destroy the pool before the
// io_context its sockets belong to.
class ConnectionPool {
 public:
  std::optional<beast::tcp_stream> Take(const tcp::endpoint& ep) {
    auto it = idle_.find(ep);
    if (it == idle_.end() || it->second.empty()) return std::nullopt;
    beast::tcp_stream s = std::move(it->second.back());
    it->second.pop_back();
    return s;
  }
  void Put(const tcp::endpoint& ep, beast::tcp_stream s) {
    auto& v = idle_[ep];
    if (v.size() < 64) v.push_back(std::move(s));
  }

 private:
  struct Hash {
    size_t operator()(const tcp::endpoint& ep) const {
      return std::hash<std::string>()(ep.address().to_string()) ^ ep.port();
    }
  };
  std::unordered_map<tcp::endpoint, std::vector<beast::tcp_stream>, Hash> idle_;
};

inline void SetNoDelay(beast::tcp_stream& s) {
  boost::system::error_code ec;
  s.socket().set_option(tcp::no_delay(true), ec);
}

}  // namespace eldr::net
