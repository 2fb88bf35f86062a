// Reading torch.save'd state_dicts (see [Own unpickler]).
#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include <map>
#include <memory>

#include "common/model/state_dict.h"
#include "common/util/error.h"

namespace rx::model {

// [Own unpickler] torch.save(model.state_dict()) pickles a collections.OrderedDict and then sets its
// `_metadata` attribute with a BUILD opcode. LibTorch 1.13's unpickler maps that OrderedDict to None
// (it only expects one as a tensor's empty backward-hooks argument) and has no POP, so neither
// torch::pickle_load nor a byte patch can read the files PyTorch users actually have. A state_dict
// pickle uses a small, fixed set of opcodes, so we interpret exactly that subset here (protocol 2,
// torch.save's default) and read each tensor's storage record from the zip archive with LibTorch's own
// PyTorchStreamReader. Anything outside the subset is a DataError naming the opcode and offset.
namespace {

struct PickleValue;
using PickleList = std::vector<PickleValue>;
struct PickleValue {
  enum Kind { kNone, kBool, kInt, kString, kTuple, kDict, kTensor, kGlobal, kMark } kind = kNone;
  PickleValue() = default;
  explicit PickleValue(Kind k) : kind(k) {}
  int64_t i = 0;
  std::string s;                      // string, or "module.name" of a global
  std::shared_ptr<PickleList> items;  // tuple items, or dict as alternating key/value
  torch::Tensor tensor;
};

class StateDictUnpickler {
 public:
  StateDictUnpickler(caffe2::serialize::PyTorchStreamReader& archive, std::string pkl, std::string path)
      : archive_(archive), pkl_(std::move(pkl)), path_(std::move(path)) {}

  PickleValue run() {
    while (pos_ < pkl_.size()) {
      const size_t at = pos_;
      const auto op = static_cast<unsigned char>(pkl_[pos_++]);
      switch (op) {
        case 0x80:
          take(1);
          break;  // PROTO
        case '.':
          return pop();  // STOP
        case 'c': {      // GLOBAL module\nname\n
          auto module = line();
          push(global(module + "." + line()));
          break;
        }
        case 'q':
          memo_[byte()] = top();
          break;  // BINPUT
        case 'r':
          memo_[u32()] = top();
          break;  // LONG_BINPUT
        case 'h':
          push(memo_.at(byte()));
          break;  // BINGET
        case 'j':
          push(memo_.at(u32()));
          break;  // LONG_BINGET
        case '(':
          push(PickleValue(PickleValue::kMark));
          break;  // MARK
        case ')':
          push(tuple({}));
          break;  // EMPTY_TUPLE
        case 't':
          push(tuple(pop_to_mark()));
          break;  // TUPLE
        case 0x85:
          push(tuple(pop_n(1)));
          break;  // TUPLE1
        case 0x86:
          push(tuple(pop_n(2)));
          break;  // TUPLE2
        case 0x87:
          push(tuple(pop_n(3)));
          break;  // TUPLE3
        case '}':
          push(dict());
          break;  // EMPTY_DICT
        case 'N':
          push({});
          break;  // NONE
        case 0x88:
          push(boolean(true));
          break;  // NEWTRUE
        case 0x89:
          push(boolean(false));
          break;  // NEWFALSE
        case 'K':
          push(integer(byte()));
          break;  // BININT1
        case 'M':
          push(integer(u16()));
          break;  // BININT2
        case 'J':
          push(integer(static_cast<int32_t>(u32())));
          break;      // BININT
        case 0x8a: {  // LONG1
          const size_t n = byte();
          int64_t v = 0;
          for (size_t k = 0; k < n && k < 8; ++k)
            v |= static_cast<int64_t>(static_cast<unsigned char>(take(1)[0])) << (8 * k);
          push(integer(v));
          break;
        }
        case 'X':
          push(string(take(u32())));
          break;  // BINUNICODE
        case 'Q':
          push(persistent(pop()));
          break;     // BINPERSID
        case 'R': {  // REDUCE
          auto args = pop();
          push(reduce(pop(), args, at));
          break;
        }
        case 's': {  // SETITEM
          auto v = pop();
          auto k = pop();
          set_item(k, v);
          break;
        }
        case 'u': {  // SETITEMS
          auto kv = pop_to_mark();
          for (size_t k = 0; k + 1 < kv.size(); k += 2) set_item(kv[k], kv[k + 1]);
          break;
        }
        case 'b':
          pop();
          break;  // BUILD: drops the OrderedDict's _metadata state
        default:
          fail(at, "unsupported pickle opcode 0x" + hex(op));
      }
    }
    fail(pos_, "pickle ends without STOP");
  }

 private:
  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw DataError(path_ + " (data.pkl)", static_cast<int64_t>(at), what);
  }
  static std::string hex(unsigned v) {
    static const char* d = "0123456789abcdef";
    return {d[(v >> 4) & 15], d[v & 15]};
  }
  std::string take(size_t n) {
    if (pos_ + n > pkl_.size()) fail(pos_, "truncated pickle");
    auto out = pkl_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  size_t byte() { return static_cast<unsigned char>(take(1)[0]); }
  size_t u16() { return byte() | (byte() << 8); }
  size_t u32() { return u16() | (u16() << 16); }
  std::string line() {
    const auto end = pkl_.find('\n', pos_);
    if (end == std::string::npos) fail(pos_, "unterminated GLOBAL");
    auto out = pkl_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return out;
  }
  void push(PickleValue v) { stack_.push_back(std::move(v)); }
  const PickleValue& top() const {
    if (stack_.empty()) fail(pos_, "stack underflow");
    return stack_.back();
  }
  PickleValue pop() {
    auto v = top();
    stack_.pop_back();
    return v;
  }
  PickleList pop_n(size_t n) {
    if (stack_.size() < n) fail(pos_, "stack underflow");
    PickleList out(stack_.end() - static_cast<long>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return out;
  }
  PickleList pop_to_mark() {
    PickleList out;
    while (top().kind != PickleValue::kMark) out.insert(out.begin(), pop());
    pop();
    return out;
  }
  static PickleValue tuple(PickleList items) {
    PickleValue v(PickleValue::kTuple);
    v.items = std::make_shared<PickleList>(std::move(items));
    return v;
  }
  static PickleValue dict() {
    PickleValue v(PickleValue::kDict);
    v.items = std::make_shared<PickleList>();
    return v;
  }
  static PickleValue boolean(bool b) {
    PickleValue v(PickleValue::kBool);
    v.i = b;
    return v;
  }
  static PickleValue integer(int64_t i) {
    PickleValue v(PickleValue::kInt);
    v.i = i;
    return v;
  }
  static PickleValue string(std::string s) {
    PickleValue v(PickleValue::kString);
    v.s = std::move(s);
    return v;
  }
  static PickleValue global(std::string name) {
    PickleValue v(PickleValue::kGlobal);
    v.s = std::move(name);
    return v;
  }
  void set_item(const PickleValue& k, const PickleValue& v) {
    if (top().kind != PickleValue::kDict) fail(pos_, "SETITEM on a non-dict");
    top().items->push_back(k);
    top().items->push_back(v);
  }
  static std::vector<int64_t> ints(const PickleValue& t) {
    std::vector<int64_t> out;
    for (const auto& x : *t.items) out.push_back(x.i);
    return out;
  }

  // ('storage', torch.<Type>Storage, key, location, numel) -> a flat CPU tensor of that storage.
  PickleValue persistent(const PickleValue& pid) {
    if (pid.kind != PickleValue::kTuple || pid.items->size() < 5 ||
        (*pid.items)[1].kind != PickleValue::kGlobal)
      fail(pos_, "unexpected persistent id");
    static const std::map<std::string, c10::ScalarType> types = {
        {"torch.FloatStorage", torch::kFloat}, {"torch.DoubleStorage", torch::kDouble},
        {"torch.HalfStorage", torch::kHalf},   {"torch.BFloat16Storage", torch::kBFloat16},
        {"torch.LongStorage", torch::kLong},   {"torch.IntStorage", torch::kInt},
        {"torch.ShortStorage", torch::kShort}, {"torch.CharStorage", torch::kChar},
        {"torch.ByteStorage", torch::kByte},   {"torch.BoolStorage", torch::kBool}};
    auto type = types.find((*pid.items)[1].s);
    if (type == types.end()) fail(pos_, "unsupported storage type " + (*pid.items)[1].s);
    const std::string key = (*pid.items)[2].s;
    const int64_t numel = (*pid.items)[4].i;
    auto record = archive_.getRecord("data/" + key);
    const size_t bytes = std::get<1>(record);
    const auto itemsize = static_cast<size_t>(c10::elementSize(type->second));
    if (bytes != static_cast<size_t>(numel) * itemsize)
      fail(pos_, "storage " + key + " has " + std::to_string(bytes) + " bytes, expected " +
                     std::to_string(numel * static_cast<int64_t>(itemsize)));
    PickleValue v(PickleValue::kTensor);
    v.tensor =
        torch::from_blob(std::get<0>(record).get(), {numel}, torch::TensorOptions().dtype(type->second))
            .clone();
    return v;
  }

  PickleValue reduce(const PickleValue& fn, const PickleValue& args, size_t at) {
    if (fn.kind != PickleValue::kGlobal || args.kind != PickleValue::kTuple)
      fail(at, "REDUCE of a non-global");
    // LibTorch's own pickler (save_state_dict) tags containers with their type; the tag is not needed.
    if (fn.s == "torch.jit._pickle.restore_type_tag" && !args.items->empty()) return (*args.items)[0];
    if (fn.s == "collections.OrderedDict") return args.items->empty() ? dict() : PickleValue{};
    if (fn.s == "torch._utils._rebuild_tensor_v2") {
      const auto& a = *args.items;
      if (a.size() < 4 || a[0].kind != PickleValue::kTensor) fail(at, "malformed _rebuild_tensor_v2");
      PickleValue v(PickleValue::kTensor);
      v.tensor = a[0].tensor.as_strided(ints(a[2]), ints(a[3]), a[1].i).clone();
      return v;
    }
    fail(at, "unsupported global " + fn.s + " (not a plain state_dict of tensors)");
  }

  caffe2::serialize::PyTorchStreamReader& archive_;
  std::string pkl_;
  std::string path_;
  size_t pos_ = 0;
  std::vector<PickleValue> stack_;
  std::map<size_t, PickleValue> memo_;
};

}  // namespace

NamedTensors read_state_dict(const std::string& path) {
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw IoError(path, "cannot open state_dict file");
    if (probe.peek() == std::ifstream::traits_type::eof())
      throw DataError(path, "empty file, not a torch.save'd state_dict");
  }
  PickleValue root;
  try {
    caffe2::serialize::PyTorchStreamReader archive(path);
    auto record = archive.getRecord("data.pkl");
    StateDictUnpickler unpickler(
        archive, std::string(static_cast<const char*>(std::get<0>(record).get()), std::get<1>(record)), path);
    root = unpickler.run();
  } catch (const c10::Error& e) {
    throw DataError(path, "not a torch.save'd state_dict (" + std::string(e.what_without_backtrace()) + ")");
  }
  if (root.kind != PickleValue::kDict) throw DataError(path, "expected a dict of tensors at the top level");
  NamedTensors out;
  for (size_t k = 0; k + 1 < root.items->size(); k += 2) {
    const auto& key = (*root.items)[k];
    const auto& value = (*root.items)[k + 1];
    if (key.kind != PickleValue::kString) throw DataError(path, "a key of the dict is not a string");
    if (value.kind != PickleValue::kTensor) throw DataError(path, "key \"" + key.s + "\" is not a tensor");
    out.emplace_back(key.s, value.tensor);
  }
  return out;
}

}  // namespace rx::model
