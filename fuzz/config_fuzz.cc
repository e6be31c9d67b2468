// libFuzzer target: configuration input: the `eldr serve` config file (YAML or JSON, server/
// config.h), worker URLs, and a model's Hugging Face config.json (geometry.h).
// Invariants: parsing never throws (yaml-cpp reports by exception; ParseServeConfig must turn
// every one into a Status); every worker of an accepted config passes WorkerSpec::Validate(); an
// accepted URL's host and port survive HostHeaderValue and a second parse; a geometry read from
// config.json passes ModelGeometry::Validate().
#include <string>
#include <string_view>

#include "eldr/geometry.h"
#include "eldr/net/wire.h"
#include "eldr/server/config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto o = eldr::server::ParseServeConfig(text)) {
    for (const auto* list : {&o->prefill, &o->decode}) {
      for (const auto& w : *list) ELDR_FUZZ_CHECK(w.Validate().ok());
    }
  }
  for (bool listen : {false, true}) {
    if (auto u = eldr::net::ParseHttpUrl(text, listen)) {
      ELDR_FUZZ_CHECK(!u->host.empty());
      ELDR_FUZZ_CHECK(u->port >= (listen ? 0 : 1) && u->port <= 65535);
      const std::string again = "http://" + eldr::net::HostHeaderValue(u->host, u->port);
      auto v = eldr::net::ParseHttpUrl(again, listen);
      ELDR_FUZZ_CHECK(v && v->host == u->host && v->port == u->port);
    }
    (void)eldr::server::ParseWorkerUrl(text, listen);
  }
  if (auto g = eldr::ModelFromHfConfig(text)) ELDR_FUZZ_CHECK(g->Validate().ok());
  return 0;
}
