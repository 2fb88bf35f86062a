#pragma once
// [ApiError] What the service throws for a request it refuses; the router turns it into
// {"error":{"code","message","field"}} with `status`. Everything else that escapes is a 500.
#include <stdexcept>
#include <string>

namespace rx::coord {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string code, const std::string& message, std::string field = "")
      : std::runtime_error(message), status_(status), code_(std::move(code)), field_(std::move(field)) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }
  const std::string& field() const { return field_; }

 private:
  int status_;
  std::string code_;
  std::string field_;
};

}  // namespace rx::coord
