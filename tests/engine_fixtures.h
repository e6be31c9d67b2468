// Reading tests/fixtures/engines/ (written by make_fixtures.py from the engines' source): the
// response bodies and expected.json's [L][E] count tables.
#pragma once

#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <string>

#include "eldr/expert_counts.h"

namespace eldr::testing {

// The fixture file's bytes (empty when it is missing: the test then fails on its content).
inline std::string ReadEngineFixture(const std::string& name) {
  std::ifstream f(std::string(ELDR_FIXTURE_DIR) + "/" + name);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A JSON [L][E] table of counts.
inline ExpertCounts CountsFromJson(const boost::json::value& v) {
  const auto& rows = v.as_array();
  ExpertCounts c(static_cast<int>(rows.size()), static_cast<int>(rows.at(0).as_array().size()));
  auto d = c.mutable_data();
  size_t i = 0;
  for (const auto& r : rows) {
    for (const auto& x : r.as_array()) d[i++] = static_cast<uint32_t>(x.as_int64());
  }
  return c;
}

}  // namespace eldr::testing
