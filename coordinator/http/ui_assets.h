#pragma once
// [Dashboard] The web pages under coordinator/web/, embedded in the binary at build time
// (embed_assets.cmake writes the table) and served at /ui/ without a token: the page itself asks for
// one and sends it as `Authorization: Bearer` on every API call, so it never appears in a URL.
#include <cstddef>
#include <string>
#include <vector>

#include "coordinator/http/router.h"

namespace rx::coord::ui {

struct Asset {
  const char* name;          // file name under /ui/, e.g. "job.html"
  const char* content_type;  // from the extension, fixed at build time
  const char* etag;          // quoted SHA-256 prefix of the bytes
  const unsigned char* data;
  size_t size;
};

const std::vector<Asset>& assets();  // generated

// Handles GET/HEAD of "/", "/ui" and "/ui/<name>" (`parts` are the path segments); ApiError 404/405
// otherwise. Responses carry a strict Content-Security-Policy (scripts and styles from files only).
Response serve(const Request& req, const std::vector<std::string>& parts);

}  // namespace rx::coord::ui
