// openapi.hpp - the OpenAPI document served at /openapi.json: the embedded
// web/openapi.json with this configuration's limits, product columns and
// security filled in at start (not the constants of the file), and the id
// types the serving functions take (read from the database; the document is
// rebuilt for each GET /openapi.json so that it follows a change of types).
#pragma once

#include <string>
#include <string_view>

#include "config.hpp"

namespace rsproxy {

// Throws std::exception when `base` is not the JSON object it should be.
std::string openapi_document(std::string_view base, const Config& cfg, IdTypes types = IdTypes{});

}  // namespace rsproxy
