#pragma once
// Small helpers shared by the coordinator's parts: time, randomness, digests, constant-time compare.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/util/sha256.h"  // rx::sha256_hex, found from rx::coord by ordinary lookup

namespace rx::coord {

int64_t now_ms();                      // wall clock, ms since the epoch
std::string iso8601(int64_t unix_ms);  // "2026-01-02T03:04:05.678Z"
std::string random_hex(int bytes);     // OpenSSL RAND_bytes
// Constant-time equality for equal-length secrets (digests); different lengths compare unequal.
bool ct_equal(const std::string& a, const std::string& b);

// [Foreign text] Text the coordinator did not parse as JSON (a worker's log line, sbatch's stderr) may
// hold any bytes, and nlohmann's dump() throws on a string that is not UTF-8: one such byte in a job's
// error once stopped the scheduler's tick and then the coordinator's restart. Two guards:
// printable_utf8() makes such text safe where it enters: at most `cap` bytes, cut at a character
// boundary ("..." appended), every byte that is not part of valid UTF-8 and every control character
// replaced by '?'; dump_json() is dump() that writes U+FFFD for an invalid byte instead of throwing,
// for everything the coordinator stores or serves.
std::string printable_utf8(std::string_view text, size_t cap);
std::string dump_json(const nlohmann::json& j, int indent = -1);

}  // namespace rx::coord
