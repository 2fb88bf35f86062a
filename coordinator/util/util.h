#pragma once
// Small helpers shared by the coordinator's parts: time, randomness, digests, constant-time compare.
#include <cstdint>
#include <string>

#include "common/util/sha256.h"  // rx::sha256_hex, found from rx::coord by ordinary lookup

namespace rx::coord {

int64_t now_ms();                      // wall clock, ms since the epoch
std::string iso8601(int64_t unix_ms);  // "2026-01-02T03:04:05.678Z"
std::string random_hex(int bytes);     // OpenSSL RAND_bytes
// Constant-time equality for equal-length secrets (digests); different lengths compare unequal.
bool ct_equal(const std::string& a, const std::string& b);

}  // namespace rx::coord
