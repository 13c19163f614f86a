// openapi.hpp - the OpenAPI document served at /openapi.json: the embedded
// web/openapi.json with this configuration's limits, product columns and
// security filled in at start (not the constants of the file).
#pragma once

#include <string>
#include <string_view>

#include "config.hpp"

namespace rsproxy {

// Throws std::exception when `base` is not the JSON object it should be.
std::string openapi_document(std::string_view base, const Config& cfg);

}  // namespace rsproxy
