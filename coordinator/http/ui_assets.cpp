#include "coordinator/http/ui_assets.h"

#include <string_view>

#include "coordinator/jobs/api_error.h"

namespace rx::coord::ui {

namespace http = boost::beast::http;

namespace {

// [Dashboard CSP] Nothing inline and nothing from elsewhere: scripts, styles and API calls go to this
// origin only, so an injected job name or log line cannot run as script. Chart.js styles its canvases
// through the CSSOM, which style-src does not restrict.
constexpr const char* kCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

Response base(const Request& req, http::status st) {
  Response res{st, req.version()};
  res.set(http::field::server, "resnext-coordinator");
  res.set("Content-Security-Policy", kCsp);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "no-referrer");
  res.set("X-Frame-Options", "DENY");
  res.keep_alive(req.keep_alive());
  return res;
}

Response redirect(const Request& req, const char* to) {
  Response res = base(req, http::status::found);
  res.set(http::field::location, to);
  res.set(http::field::cache_control, "no-cache");
  res.prepare_payload();
  return res;
}

const Asset* find(std::string_view name) {
  for (const auto& a : assets())
    if (name == a.name) return &a;
  return nullptr;
}

}  // namespace

Response serve(const Request& req, const std::vector<std::string>& parts) {
  const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
  if (!get) {
    Response res =
        error_response(405, "method_not_allowed", std::string(req.method_string()) + " not allowed; use GET",
                       "", req.version(), req.keep_alive());
    res.set(http::field::allow, "GET");
    return res;
  }
  if (parts.empty()) return redirect(req, "/ui/");
  if (parts.size() == 1 && req.target() == "/ui") return redirect(req, "/ui/");
  const std::string name = parts.size() == 1 ? "index.html" : parts.size() == 2 ? parts[1] : "";
  const Asset* a = find(name);
  if (!a) throw ApiError(404, "not_found", "no dashboard file '" + name + "'");
  // Names are not content-hashed, so every use revalidates; the ETag makes that a 304 without a body.
  const auto inm = req[http::field::if_none_match];
  if (!inm.empty() && std::string_view(inm.data(), inm.size()) == a->etag) {
    Response res = base(req, http::status::not_modified);
    res.set(http::field::etag, a->etag);
    res.set(http::field::cache_control, "no-cache");
    return res;
  }
  Response res = base(req, http::status::ok);
  res.set(http::field::content_type, a->content_type);
  res.set(http::field::etag, a->etag);
  res.set(http::field::cache_control, "no-cache");
  res.body().assign(reinterpret_cast<const char*>(a->data), a->size);
  res.prepare_payload();
  return res;
}

}  // namespace rx::coord::ui
