#pragma once
#include <string>

namespace rx {
// Lower-case hex SHA-256 of `bytes` (OpenSSL's EVP digest).
std::string sha256_hex(const std::string& bytes);
}  // namespace rx
