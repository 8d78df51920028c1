// io::export_onnx: the traced depth-0 op calls become ONNX nodes (opset 17, IR version 8).
//
// Dynamic axes: the forward runs twice, on the example inputs (trace A) and on inputs grown
// along every dynamic axis (trace B, each named axis k by k + 1 elements, so that no two axes
// change alike). The two traces must call the same ops; a size that an op's attribute or a
// reshape target holds is then a pair (A, B): equal pairs are constants, and a pair that
// matches c * axis or c * axis1 * axis2 is computed in the graph from Shape of the input
// that carries the axis. What cannot be matched is an error naming the op.
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "core/atomic_file.h"
#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/io/onnx.h"
#include "ember/io/safetensors.h"
#include "ember/nn/hsoftmax.h"
#include "ember/ops/ops.h"
#include "trace.h"

namespace ember::io {
namespace {

using onnx_export::NestedCall;
using onnx_export::TracedCall;
using onnx_export::Tracer;
namespace pb = ::onnx;

constexpr const char* kWhere = "export_onnx";
constexpr int64_t kOpset = 17;
constexpr int64_t kIrVersion = 8;
constexpr int64_t kIntMax = std::numeric_limits<int64_t>::max();

int32_t onnx_type(DType t, const std::string& what) {
  switch (t) {
    case DType::f32:
      return pb::TensorProto::FLOAT;
    case DType::f64:
      return pb::TensorProto::DOUBLE;
    case DType::i32:
      return pb::TensorProto::INT32;
    case DType::i64:
      return pb::TensorProto::INT64;
    case DType::boolean:
      return pb::TensorProto::BOOL;
    case DType::f16:
      return pb::TensorProto::FLOAT16;
    case DType::bf16:
      return pb::TensorProto::BFLOAT16;
  }
  throw Error(kWhere, what + ": unsupported dtype");
}

// Float dtypes rank above integer ones, wider above narrower (the dtype a mixed pair meets at).
int rank_of(DType t) {
  switch (t) {
    case DType::boolean:
      return 0;
    case DType::i32:
      return 1;
    case DType::i64:
      return 2;
    case DType::f16:
      return 3;
    case DType::bf16:
      return 3;
    case DType::f32:
      return 4;
    case DType::f64:
      return 5;
  }
  return 0;
}

// prefix + n (appending: GCC 12 reports a false -Wrestrict for "literal" + std::string).
std::string numbered(const char* prefix, int64_t n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

int64_t wrap(int64_t d, int64_t rank) { return d < 0 ? d + rank : d; }

using ViewKey = std::tuple<const void*, int64_t, Shape, Shape, DType>;
ViewKey view_key(const Tensor& t) { return {t.impl().storage.get(), t.offset(), t.shape(), t.strides(), t.dtype()}; }

// A size of the graph that is not fixed: axis `axis` of graph input `input`, with its size in
// trace A and in trace B.
struct Sym {
  std::string name, input;
  int64_t axis, a, b;
};

// The hierarchical softmax tree of one nn::HierarchicalSoftmax, as the index tables of the
// composed ONNX form (docs/deploy.md).
struct HsTables {
  int64_t C = 0, I = 0, S = 0, A = 0, depth = 0;
  std::vector<int64_t> node_rows;  // (I, A): row of Z' = [logits, 0] for child j of node n
  std::vector<float> node_mask;    // (I, A): 0 for a child, -inf for padding
  std::vector<int64_t> paths;      // (C, depth): n * A + j per edge, root last; I * A pads
};

HsTables hs_tables(const nn::HierarchicalSoftmax& m) {
  const HSoftmaxTree t = m.tree_tables();
  HsTables r;
  r.C = t.num_classes, r.I = t.num_nodes, r.S = t.num_rows, r.A = t.max_arity, r.depth = t.max_depth;
  const std::vector<int32_t> v = contiguous(t.table).to_vector<int32_t>();
  const int64_t slots = r.C + r.I - 1;
  const int32_t* slot_off = v.data();
  const int32_t* row_off = slot_off + r.I + 1;
  const int32_t* parent_slot = row_off + r.I + 1;
  const int32_t* slot_node = parent_slot + r.I;
  const int32_t* class_slot = slot_node + 2 * slots;  // after slot_node and slot_child
  r.node_rows.assign(static_cast<size_t>(r.I * r.A), r.S);
  r.node_mask.assign(static_cast<size_t>(r.I * r.A), -std::numeric_limits<float>::infinity());
  for (int64_t n = 0; n < r.I; ++n) {
    const int64_t arity = slot_off[n + 1] - slot_off[n];
    for (int64_t j = 0; j < arity; ++j) {
      // A binary node owns one row: its second child has the fixed logit 0 (column S of Z').
      r.node_rows[n * r.A + j] = arity == 2 ? (j == 0 ? row_off[n] : r.S) : row_off[n] + j;
      r.node_mask[n * r.A + j] = 0.0f;
    }
  }
  r.paths.assign(static_cast<size_t>(r.C * r.depth), r.I * r.A);
  for (int64_t c = 0; c < r.C; ++c) {
    int64_t k = 0;
    for (int64_t s = class_slot[c]; s >= 0 && k < r.depth; ++k) {
      const int64_t n = slot_node[s];
      r.paths[c * r.depth + k] = n * r.A + (s - slot_off[n]);
      s = parent_slot[n];
    }
  }
  return r;
}

class Exporter {
 public:
  Exporter(nn::Module& module, const std::vector<TracedCall>& a, const std::vector<TracedCall>& b,
           const std::vector<Sym>& syms)
      : module_(module), A_(a), B_(b), syms_(syms) {
    g_ = model_.mutable_graph();
    for (const auto& [name, t] : module.named_parameters()) add_param(name, t);
    for (const auto& [name, t] : module.named_buffers()) add_param(name, t);
  }

  pb::ModelProto& model() { return model_; }
  pb::GraphProto& graph() { return *g_; }

  void add_input(const Tensor& t, const std::string& name) { bind(t, name); }

  // The graph value of output tensor t (an Identity onto `name`).
  void add_output(const Tensor& t, const std::string& name) {
    std::string v = resolve_free(t, "the model's output " + name);
    node("Identity", {v}, {name});
  }

  // Drops the nodes no output depends on (a projection the recurrence reads from its source)
  // and the initialisers only they read.
  void prune() {
    std::set<std::string> needed;
    for (const auto& o : g_->output()) needed.insert(o.name());
    std::vector<bool> keep(static_cast<size_t>(g_->node_size()), false);
    for (int k = g_->node_size() - 1; k >= 0; --k) {
      const pb::NodeProto& n = g_->node(k);
      bool used = false;
      for (const auto& o : n.output()) used = used || needed.count(o) > 0;
      if (!used) continue;
      keep[static_cast<size_t>(k)] = true;
      for (const auto& i : n.input()) needed.insert(i);
    }
    google::protobuf::RepeatedPtrField<pb::NodeProto> nodes;
    for (int k = 0; k < g_->node_size(); ++k)
      if (keep[static_cast<size_t>(k)]) *nodes.Add() = g_->node(k);
    g_->mutable_node()->Swap(&nodes);
    google::protobuf::RepeatedPtrField<pb::TensorProto> inits;
    for (const auto& t : g_->initializer())
      if (needed.count(t.name())) *inits.Add() = t;
    g_->mutable_initializer()->Swap(&inits);
  }

  void run() {
    for (i_ = 0; i_ < A_.size(); ++i_) emit(A_[i_]);
  }

 private:
  // --- names, initialisers -------------------------------------------------------------------
  void add_param(const std::string& name, const Tensor& t) {
    if (!t.defined()) return;
    params_.emplace(t.impl_ptr().get(), name);
    param_views_.emplace(view_key(t), name);
    param_tensors_.emplace(name, t);
  }
  void bind(const Tensor& t, const std::string& name) {
    if (!t.defined()) return;
    names_[t.impl_ptr().get()] = name;
    views_[view_key(t)] = name;
    kept_.push_back(t);
  }
  std::string fresh() { return numbered("t", uid_++); }

  void add_initializer(const std::string& name, const Tensor& t_in) {
    if (!initialised_.insert(name).second) return;
    const Tensor t = contiguous(t_in.detach());
    pb::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx_type(t.dtype(), name));
    for (int64_t d : t.shape()) p->add_dims(d);
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    if (bytes > 0) p->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), bytes));
  }
  template <class T>
  std::string constant(const std::vector<T>& v, const Shape& shape, DType dt) {
    const std::string name = numbered("c", uid_++);
    if constexpr (std::is_same_v<T, double>) {
      add_initializer(name, to_dtype(from_vector<double>(v, shape), dt));
    } else {
      add_initializer(name, from_vector<T>(v, shape));
    }
    return name;
  }
  std::string const_i64(const std::vector<int64_t>& v) {
    return constant(v, {static_cast<int64_t>(v.size())}, DType::i64);
  }
  std::string scalar(double v, DType dt) { return constant(std::vector<double>{v}, {}, dt); }

  // Input j of the current call as a graph value.
  std::string in(size_t j) {
    const Tensor& t = A_[i_].inputs.at(j);
    if (!t.defined()) return "";
    const Tensor* tb = j < B_[i_].inputs.size() ? &B_[i_].inputs[j] : nullptr;
    return resolve(t, tb, std::string("input ") + std::to_string(j) + " of op '" + A_[i_].def->name + "'");
  }
  const Tensor& tin(size_t j) const { return A_[i_].inputs.at(j); }
  const Tensor& tout(size_t k) const { return A_[i_].outputs.at(k); }
  bool has(size_t j) const { return j < A_[i_].inputs.size() && A_[i_].inputs[j].defined(); }

  std::string resolve(const Tensor& t, const Tensor* tb, const std::string& what) {
    if (auto it = names_.find(t.impl_ptr().get()); it != names_.end()) return it->second;
    if (auto it = params_.find(t.impl_ptr().get()); it != params_.end()) return param(it->second);
    if (auto it = views_.find(view_key(t)); it != views_.end()) return it->second;
    if (auto it = param_views_.find(view_key(t)); it != param_views_.end()) return param(it->second);
    // Not computed by a traced op: a constant, which must be the same tensor in both traces.
    if (tb && tb->defined() && !tb->is_same(t)) {
      EMBER_CHECK(tb->shape() == t.shape() && tb->dtype() == t.dtype() && same_values(t, *tb), kWhere, what, " (",
                  shape_str(t.shape()), ") is not computed by a traced op and changes with the input size ",
                  "(it becomes ", shape_str(tb->shape()),
                  "): it was built outside the op path from the inputs (host code, a data-dependent branch), "
                  "which the trace cannot see");
    }
    const std::string name = numbered("const_", consts_++);
    add_initializer(name, t);
    bind(t, name);
    return name;
  }
  std::string resolve_free(const Tensor& t, const std::string& what) { return resolve(t, nullptr, what); }
  std::string param(const std::string& name) {
    add_initializer(name, param_tensors_.at(name));
    return name;
  }
  static bool same_values(const Tensor& a, const Tensor& b) {
    const Tensor ca = contiguous(a.detach()), cb = contiguous(b.detach());
    const size_t n = static_cast<size_t>(a.numel()) * a.element_size();
    return n == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), n) == 0;
  }

  // --- nodes ---------------------------------------------------------------------------------
  pb::NodeProto* node(const std::string& type, const std::vector<std::string>& ins,
                      const std::vector<std::string>& outs) {
    pb::NodeProto* n = g_->add_node();
    n->set_op_type(type);
    n->set_name(type + numbered("_", nodes_++));
    for (const auto& s : ins) n->add_input(s);
    for (const auto& s : outs) n->add_output(s);
    return n;
  }
  // A node with one fresh output; returns the output's name.
  std::string op1(const std::string& type, const std::vector<std::string>& ins, pb::NodeProto** out = nullptr) {
    const std::string o = fresh();
    pb::NodeProto* n = node(type, ins, {o});
    if (out) *out = n;
    return o;
  }
  static void attr(pb::NodeProto* n, const char* name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(pb::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(pb::NodeProto* n, const char* name, double v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(pb::AttributeProto::FLOAT);
    a->set_f(static_cast<float>(v));
  }
  static void attr(pb::NodeProto* n, const char* name, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(pb::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void attr(pb::NodeProto* n, const char* name, const std::string& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(pb::AttributeProto::STRING);
    a->set_s(v);
  }
  static void attr(pb::NodeProto* n, const char* name, const std::vector<std::string>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(pb::AttributeProto::STRINGS);
    for (const auto& x : v) a->add_strings(x);
  }
  std::string unary(const std::string& type, const std::string& x) { return op1(type, {x}); }
  std::string binary(const std::string& type, const std::string& a, const std::string& b) { return op1(type, {a, b}); }
  std::string cast(const std::string& x, DType from, DType to) {
    if (from == to) return x;
    pb::NodeProto* n;
    const std::string o = op1("Cast", {x}, &n);
    attr(n, "to", static_cast<int64_t>(onnx_type(to, "Cast")));
    return o;
  }
  std::string reduce(const std::string& type, const std::string& x, const std::vector<int64_t>& axes, bool keep) {
    pb::NodeProto* n;
    std::string o;
    if (type == "ReduceSum") {  // opset 13+: axes as an input
      o = op1(type, axes.empty() ? std::vector<std::string>{x} : std::vector<std::string>{x, const_i64(axes)}, &n);
    } else {
      o = op1(type, {x}, &n);
      if (!axes.empty()) attr(n, "axes", axes);
    }
    attr(n, "keepdims", static_cast<int64_t>(keep));
    return o;
  }
  std::string unsqueeze(const std::string& x, const std::vector<int64_t>& axes) {
    return op1("Unsqueeze", {x, const_i64(axes)});
  }
  std::string squeeze(const std::string& x, const std::vector<int64_t>& axes) {
    return op1("Squeeze", {x, const_i64(axes)});
  }
  // Binds output k of the current call to a value.
  void out(size_t k, const std::string& v) {
    bind(A_[i_].outputs.at(k), v);
    producer_[v] = i_;
  }
  // The traced call that produced tensor t, or null (an input, a parameter, a constant).
  const TracedCall* producer(const Tensor& t) const {
    if (!t.defined()) return nullptr;
    auto it = names_.find(t.impl_ptr().get());
    if (it == names_.end()) return nullptr;
    auto p = producer_.find(it->second);
    return p == producer_.end() ? nullptr : &A_[p->second];
  }

  // --- sizes that follow the dynamic axes ----------------------------------------------------
  std::string sym_value(const Sym& s) {
    auto it = sym_cache_.find(s.name);
    if (it != sym_cache_.end()) return it->second;
    pb::NodeProto* n;
    const std::string o = op1("Shape", {s.input}, &n);
    attr(n, "start", s.axis);
    attr(n, "end", s.axis + 1);
    sym_cache_[s.name] = o;
    return o;
  }
  // A 1-D int64 [1] value holding the size that is `a` in trace A and `b` in trace B.
  std::optional<std::string> size_value(int64_t a, int64_t b) {
    if (a == b) return const_i64({a});
    for (const Sym& s : syms_)
      if (s.a == a && s.b == b) return sym_value(s);
    for (const Sym& s : syms_)
      if (s.a > 0 && s.b > 0 && a % s.a == 0 && b % s.b == 0 && a / s.a == b / s.b)
        return binary("Mul", sym_value(s), const_i64({a / s.a}));
    for (size_t p = 0; p < syms_.size(); ++p)
      for (size_t q = p; q < syms_.size(); ++q) {
        const int64_t pa = syms_[p].a * syms_[q].a, pbb = syms_[p].b * syms_[q].b;
        if (pa > 0 && pbb > 0 && a % pa == 0 && b % pbb == 0 && a / pa == b / pbb) {
          std::string v = binary("Mul", sym_value(syms_[p]), sym_value(syms_[q]));
          return a / pa == 1 ? v : binary("Mul", v, const_i64({a / pa}));
        }
      }
    return std::nullopt;
  }
  // A 1-D int64 shape value for the sizes `a` (trace A) and `b` (trace B). With `minus_one`, a
  // single free size is written -1 (Reshape infers it).
  std::string shape_value(const Shape& a, const Shape& b, bool minus_one) {
    EMBER_CHECK(a.size() == b.size(), kWhere, "op '", A_[i_].def->name, "' (call ", i_,
                ") gives results of different rank when the dynamic axes change size: ", shape_str(a), " vs ",
                shape_str(b));
    size_t differ = 0, at = 0;
    for (size_t d = 0; d < a.size(); ++d)
      if (a[d] != b[d]) ++differ, at = d;
    if (differ == 0) return const_i64(a);
    if (differ == 1 && minus_one) {
      Shape s = a;
      s[at] = -1;
      return const_i64(s);
    }
    std::vector<std::string> parts;
    for (size_t d = 0; d < a.size(); ++d) {
      std::optional<std::string> v = size_value(a[d], b[d]);
      EMBER_CHECK(v.has_value(), kWhere, "op '", A_[i_].def->name, "' (call ", i_, "): size ", d, " of ", shape_str(a),
                  " changes to ", b[d],
                  " with the dynamic axes in a way the graph cannot compute from them; export with fewer "
                  "dynamic axes");
      parts.push_back(*v);
    }
    pb::NodeProto* n;
    const std::string o = op1("Concat", parts, &n);
    attr(n, "axis", int64_t{0});
    return o;
  }
  // A size held by an attribute: fixed, or following a dynamic axis.
  std::string int_value(int64_t a, int64_t b, const char* what) {
    std::optional<std::string> v = size_value(a, b);
    EMBER_CHECK(v.has_value(), kWhere, "op '", A_[i_].def->name, "' (call ", i_, "): its ", what, " is ", a,
                " and becomes ", b, " with the dynamic axes, which the graph cannot compute from them");
    return *v;
  }

  // --- attributes ----------------------------------------------------------------------------
  const AttrValue* find_attr(const TracedCall& c, const char* name) const {
    for (const Attr& a : c.attrs)
      if (std::strcmp(a.name, name) == 0) return &a.value;
    return nullptr;
  }
  const AttrValue& at(const char* name, bool traceb = false) const {
    const AttrValue* v = find_attr(traceb ? B_[i_] : A_[i_], name);
    EMBER_CHECK(v != nullptr, kWhere, "op '", A_[i_].def->name, "' reports no attribute '", name, "'");
    return *v;
  }
  int64_t ai(const char* n, bool b = false) const { return std::get<int64_t>(at(n, b)); }
  double ad(const char* n) const { return std::get<double>(at(n)); }
  bool ab(const char* n) const { return std::get<bool>(at(n)); }
  std::string as(const char* n) const { return std::get<std::string>(at(n)); }
  std::vector<int64_t> av(const char* n) const { return std::get<std::vector<int64_t>>(at(n)); }
  std::optional<int64_t> aopt(const char* n) const {
    const AttrValue& v = at(n);
    if (std::holds_alternative<std::monostate>(v)) return std::nullopt;
    return std::get<int64_t>(v);
  }
  std::optional<double> aoptd(const char* n) const {
    const AttrValue& v = at(n);
    if (std::holds_alternative<std::monostate>(v)) return std::nullopt;
    return std::get<double>(v);
  }
  const Shape& out_b(size_t k) const { return B_[i_].outputs.at(k).shape(); }
  const Shape& in_b(size_t j) const { return B_[i_].inputs.at(j).shape(); }

  [[noreturn]] void unsupported(const std::string& why) const {
    throw Error(kWhere, std::string("op '") + A_[i_].def->name + "' (call " + std::to_string(i_) +
                            ") cannot be exported to ONNX: " + why);
  }

  // --- the ops -------------------------------------------------------------------------------
  // a and b cast to the dtype they meet at (or `to`).
  std::pair<std::string, std::string> promoted(std::optional<DType> to = std::nullopt) {
    const DType da = tin(0).dtype(), db = tin(1).dtype();
    const DType t = to ? *to : (rank_of(da) >= rank_of(db) ? da : db);
    return {cast(in(0), da, t), cast(in(1), db, t)};
  }
  void arith(const std::string& type) {
    auto [a, b] = promoted(tout(0).dtype());
    out(0, binary(type, a, b));
  }
  void compare(const std::string& type, bool negate = false) {
    auto [a, b] = promoted();
    std::string r = binary(type, a, b);
    out(0, negate ? unary("Not", r) : r);
  }
  void same(const std::string& type) { out(0, unary(type, in(0))); }

  std::string gelu(const std::string& x, DType dt, bool tanh_form) {
    std::string inner;
    if (tanh_form) {
      const std::string x3 = binary("Mul", binary("Mul", x, x), x);
      const std::string u = binary("Add", x, binary("Mul", x3, scalar(0.044715, dt)));
      inner = unary("Tanh", binary("Mul", u, scalar(std::sqrt(2.0 / M_PI), dt)));
    } else {
      inner = unary("Erf", binary("Mul", x, scalar(M_SQRT1_2, dt)));
    }
    const std::string half_x = binary("Mul", x, scalar(0.5, dt));
    return binary("Mul", half_x, binary("Add", inner, scalar(1.0, dt)));
  }

  void reshape_to_out() { out(0, binary("Reshape", in(0), shape_value(tout(0).shape(), out_b(0), true))); }

  // Slice along `dim` of input 0: [start, start + len * step) with step, sizes from both traces.
  void slice_along(int64_t dim, int64_t start_a, int64_t start_b, int64_t step) {
    const int64_t na = tin(0).size(dim), nb = in_b(0)[static_cast<size_t>(dim)];
    const int64_t la = tout(0).size(dim), lb = out_b(0)[static_cast<size_t>(dim)];
    std::string starts, ends;
    const int64_t ea = start_a + (la - 1) * step + 1, eb = start_b + (lb - 1) * step + 1;
    if (start_a == start_b) {
      starts = const_i64({start_a});
    } else if (na - start_a == nb - start_b) {  // a fixed distance from the end
      starts = const_i64({start_a - na});
    } else {
      starts = int_value(start_a, start_b, "start");
    }
    if (la == 0 && lb == 0) {
      ends = starts;
    } else if (ea >= na && eb >= nb && step > 0) {
      ends = const_i64({kIntMax});
    } else if (ea == eb) {
      ends = const_i64({ea});
    } else if (na - ea == nb - eb) {
      ends = const_i64({ea - na});
    } else {
      ends = int_value(ea, eb, "end");
    }
    out(0, op1("Slice", {in(0), starts, ends, const_i64({dim}), const_i64({step})}));
  }

  void emit(const TracedCall& c) {
    const OpId id = c.def->id;
    switch (id) {
      // creation: constants, unless their size follows a dynamic axis
      case OpId::empty:
      case OpId::full:
      case OpId::from_vector:
      case OpId::linspace: {
        if (tout(0).shape() == out_b(0)) return;  // bound lazily as a constant when used
        if (id == OpId::full) {
          pb::NodeProto* n;
          const std::string o = op1("ConstantOfShape", {shape_value(tout(0).shape(), out_b(0), false)}, &n);
          pb::TensorProto* v = n->add_attribute()->mutable_t();
          n->mutable_attribute(0)->set_name("value");
          n->mutable_attribute(0)->set_type(pb::AttributeProto::TENSOR);
          const Tensor one = to_dtype(from_vector<double>({ad("value")}, {1}), tout(0).dtype());
          v->set_data_type(onnx_type(one.dtype(), "full"));
          v->add_dims(1);
          v->set_raw_data(std::string(static_cast<const char*>(one.data_ptr()), one.element_size()));
          out(0, o);
          return;
        }
        unsupported("its size follows a dynamic axis");
      }
      case OpId::arange: {
        if (tout(0).shape() == out_b(0)) return;
        const double start = ad("start"), step = ad("step");
        // the count follows an axis: end = start + count * step
        const std::string count = int_value(tout(0).size(0), out_b(0)[0], "length");
        const DType dt = tout(0).dtype();
        const std::string n = cast(squeeze(count, {0}), DType::i64, dt);
        const std::string end = binary("Add", scalar(start, dt), binary("Mul", n, scalar(step, dt)));
        out(0, op1("Range", {scalar(start, dt), end, scalar(step, dt)}));
        return;
      }
      case OpId::uniform:
      case OpId::randn:
      case OpId::randint:
      case OpId::bernoulli:
        unsupported("random numbers are drawn at run time; build the tensor outside the traced forward");
      case OpId::contiguous:
      case OpId::clone:
        return same("Identity");
      case OpId::to_dtype:
        out(0, cast(in(0), tin(0).dtype(), tout(0).dtype()));
        return;
      case OpId::to_device:
        // A move to the CPU of a CPU tensor (lengths made host-side) is a no-op.
        if (tout(0).device().is_cpu()) return same("Identity");
        unsupported("a move to " + tout(0).device().str() + " inside the forward; export a model that runs on the CPU");
      // views
      case OpId::view:
      case OpId::reshape:
      case OpId::flatten:
        return reshape_to_out();
      case OpId::permute: {
        std::vector<int64_t> p = av("dims");
        for (auto& d : p) d = wrap(d, tin(0).dim());
        pb::NodeProto* n;
        out(0, op1("Transpose", {in(0)}, &n));
        attr(n, "perm", p);
        return;
      }
      case OpId::transpose: {
        std::vector<int64_t> p(static_cast<size_t>(tin(0).dim()));
        for (size_t d = 0; d < p.size(); ++d) p[d] = static_cast<int64_t>(d);
        std::swap(p[static_cast<size_t>(wrap(ai("dim0"), tin(0).dim()))],
                  p[static_cast<size_t>(wrap(ai("dim1"), tin(0).dim()))]);
        pb::NodeProto* n;
        out(0, op1("Transpose", {in(0)}, &n));
        attr(n, "perm", p);
        return;
      }
      case OpId::slice: {
        const int64_t dim = wrap(ai("dim"), tin(0).dim());
        auto norm = [](int64_t s, int64_t n) { return std::clamp<int64_t>(s < 0 ? s + n : s, 0, n); };
        return slice_along(dim, norm(ai("start"), tin(0).size(dim)), norm(ai("start", true), in_b(0)[dim]), ai("step"));
      }
      case OpId::narrow: {
        const int64_t dim = wrap(ai("dim"), tin(0).dim());
        auto norm = [](int64_t s, int64_t n) { return s < 0 ? s + n : s; };
        return slice_along(dim, norm(ai("start"), tin(0).size(dim)), norm(ai("start", true), in_b(0)[dim]), 1);
      }
      case OpId::select: {
        const int64_t dim = wrap(ai("dim"), tin(0).dim());
        const int64_t na = tin(0).size(dim), nb = in_b(0)[static_cast<size_t>(dim)];
        int64_t ia = ai("index"), ib = ai("index", true);
        ia = ia < 0 ? ia + na : ia, ib = ib < 0 ? ib + nb : ib;
        int64_t idx = ia;
        if (ia != ib) {
          EMBER_CHECK(na - ia == nb - ib, kWhere, "op 'select' (call ", i_,
                      "): its index follows a dynamic axis in a way the graph cannot express");
          idx = ia - na;
        }
        pb::NodeProto* n;
        out(0, op1("Gather", {in(0), constant(std::vector<int64_t>{idx}, {}, DType::i64)}, &n));
        attr(n, "axis", dim);
        return;
      }
      case OpId::expand:
      case OpId::broadcast_to: {
        // Expand broadcasts both ways: a 1 keeps the input's size, which carries the dynamic ones.
        const Shape& oa = tout(0).shape();
        const Shape& ob = out_b(0);
        Shape ta = oa, tb = ob;
        const int64_t lead = tout(0).dim() - tin(0).dim();
        for (int64_t d = lead; d < tout(0).dim(); ++d)
          if (tin(0).size(d - lead) == oa[d] && in_b(0)[d - lead] == ob[d]) ta[d] = tb[d] = 1;
        out(0, binary("Expand", in(0), shape_value(ta, tb, false)));
        return;
      }
      case OpId::squeeze:
      case OpId::unsqueeze: {
        if (tin(0).dim() == tout(0).dim()) return same("Identity");
        std::vector<int64_t> axes;
        if (id == OpId::unsqueeze) {
          axes.push_back(wrap(ai("dim"), tout(0).dim()));
          out(0, unsqueeze(in(0), axes));
        } else {
          const std::optional<int64_t> d = aopt("dim");
          if (d) {
            axes.push_back(wrap(*d, tin(0).dim()));
          } else {
            for (int64_t k = 0; k < tin(0).dim(); ++k)
              if (tin(0).size(k) == 1) axes.push_back(k);
          }
          out(0, squeeze(in(0), axes));
        }
        return;
      }
      // elementwise
      case OpId::add: {
        const double alpha = ad("alpha");
        auto [a, b] = promoted(tout(0).dtype());
        if (alpha != 1.0) b = binary("Mul", b, scalar(alpha, tout(0).dtype()));
        out(0, binary("Add", a, b));
        return;
      }
      case OpId::sub:
        return arith("Sub");
      case OpId::mul:
        return arith("Mul");
      case OpId::div:
        return arith("Div");
      case OpId::maximum:
        return arith("Max");
      case OpId::minimum:
        return arith("Min");
      case OpId::pow: {
        if (c.inputs.size() == 2) return arith("Pow");
        out(0, binary("Pow", in(0), scalar(ad("exponent"), tin(0).dtype())));
        return;
      }
      case OpId::eq:
        return compare("Equal");
      case OpId::ne:
        return compare("Equal", true);
      case OpId::lt:
        return compare("Less");
      case OpId::le:
        return compare("LessOrEqual");
      case OpId::gt:
        return compare("Greater");
      case OpId::ge:
        return compare("GreaterOrEqual");
      case OpId::logical_and:
      case OpId::logical_or: {
        auto [a, b] = promoted(DType::boolean);
        out(0, binary(id == OpId::logical_and ? "And" : "Or", a, b));
        return;
      }
      case OpId::logical_not:
        out(0, unary("Not", cast(in(0), tin(0).dtype(), DType::boolean)));
        return;
      case OpId::neg:
        return same("Neg");
      case OpId::exp:
        return same("Exp");
      case OpId::log:
        return same("Log");
      case OpId::erf:
        return same("Erf");
      case OpId::sqrt:
        return same("Sqrt");
      case OpId::abs:
        return same("Abs");
      case OpId::tanh:
        return same("Tanh");
      case OpId::sigmoid:
        return same("Sigmoid");
      case OpId::relu:
        return same("Relu");
      case OpId::softplus:
        return same("Softplus");
      case OpId::rsqrt:
        out(0, unary("Reciprocal", unary("Sqrt", in(0))));
        return;
      case OpId::log1p:
        out(0, unary("Log", binary("Add", in(0), scalar(1.0, tin(0).dtype()))));
        return;
      case OpId::expm1:
        out(0, binary("Sub", unary("Exp", in(0)), scalar(1.0, tin(0).dtype())));
        return;
      case OpId::silu: {
        const std::string x = in(0);
        out(0, binary("Mul", x, unary("Sigmoid", x)));
        return;
      }
      case OpId::gelu: {
        const std::string form = as("approximate");
        if (form != "none" && form != "tanh") unsupported("gelu approximation '" + form + "'");
        out(0, gelu(in(0), tin(0).dtype(), form == "tanh"));
        return;
      }
      case OpId::clamp: {
        const std::optional<double> lo = aoptd("min"), hi = aoptd("max");
        const DType dt = tin(0).dtype();
        out(0, op1("Clip", {in(0), lo ? scalar(*lo, dt) : "", hi ? scalar(*hi, dt) : ""}));
        return;
      }
      case OpId::where: {
        const DType dt = tout(0).dtype();
        const std::string cnd = cast(in(0), tin(0).dtype(), DType::boolean);
        out(0, op1("Where", {cnd, cast(in(1), tin(1).dtype(), dt), cast(in(2), tin(2).dtype(), dt)}));
        return;
      }
      case OpId::masked_fill: {
        const std::string mask = cast(in(1), tin(1).dtype(), DType::boolean);
        out(0, op1("Where", {mask, scalar(ad("value"), tin(0).dtype()), in(0)}));
        return;
      }
      case OpId::dropout: {
        if (ab("training") && ad("p") > 0)
          unsupported(
              "dropout in training mode; the exporter traces in eval mode, so a module that passes "
              "training=true itself must be given its is_training() instead");
        return same("Identity");
      }
      // reductions
      case OpId::sum:
      case OpId::mean:
      case OpId::prod:
      case OpId::amax:
      case OpId::amin: {
        std::vector<int64_t> dims = av("dims");
        for (auto& d : dims) d = wrap(d, tin(0).dim());
        if (dims.empty())
          for (int64_t d = 0; d < tin(0).dim(); ++d) dims.push_back(d);
        const char* type = id == OpId::sum    ? "ReduceSum"
                           : id == OpId::mean ? "ReduceMean"
                           : id == OpId::prod ? "ReduceProd"
                           : id == OpId::amax ? "ReduceMax"
                                              : "ReduceMin";
        std::string x = cast(in(0), tin(0).dtype(), tout(0).dtype());
        out(0, dims.empty() ? unary("Identity", x) : reduce(type, x, dims, ab("keepdim")));
        return;
      }
      case OpId::var: {
        std::vector<int64_t> dims = av("dims");
        for (auto& d : dims) d = wrap(d, tin(0).dim());
        if (dims.empty())
          for (int64_t d = 0; d < tin(0).dim(); ++d) dims.push_back(d);
        int64_t na = 1, nb = 1;
        for (int64_t d : dims) na *= tin(0).size(d), nb *= in_b(0)[static_cast<size_t>(d)];
        EMBER_CHECK(na == nb, kWhere, "op 'var' (call ", i_, ") reduces over a dynamic axis; not supported");
        const DType dt = tout(0).dtype();
        const std::string x = in(0);
        const std::string d = binary("Sub", x, reduce("ReduceMean", x, dims, true));
        const std::string s = reduce("ReduceSum", binary("Mul", d, d), dims, ab("keepdim"));
        out(0, binary("Div", s, scalar(static_cast<double>(na - ai("correction")), dt)));
        return;
      }
      case OpId::max:
      case OpId::min: {
        const bool is_max = id == OpId::max;
        if (c.attrs.empty()) {
          std::vector<int64_t> all;
          for (int64_t d = 0; d < tin(0).dim(); ++d) all.push_back(d);
          out(0,
              all.empty() ? unary("Identity", in(0)) : reduce(is_max ? "ReduceMax" : "ReduceMin", in(0), all, false));
          return;
        }
        const int64_t dim = wrap(ai("dim"), tin(0).dim());
        const bool keep = ab("keepdim");
        const std::string x = in(0);
        out(0, reduce(is_max ? "ReduceMax" : "ReduceMin", x, {dim}, keep));
        pb::NodeProto* n;
        out(1, op1(is_max ? "ArgMax" : "ArgMin", {x}, &n));
        attr(n, "axis", dim);
        attr(n, "keepdims", static_cast<int64_t>(keep));
        return;
      }
      case OpId::argmax:
      case OpId::argmin: {
        const std::optional<int64_t> dim = aopt("dim");
        std::string x = in(0);
        int64_t axis = 0;
        bool keep = ab("keepdim");
        if (!dim) {
          x = binary("Reshape", x, const_i64({-1}));
          keep = false;
        } else {
          axis = wrap(*dim, tin(0).dim());
        }
        pb::NodeProto* n;
        out(0, op1(id == OpId::argmax ? "ArgMax" : "ArgMin", {x}, &n));
        attr(n, "axis", axis);
        attr(n, "keepdims", static_cast<int64_t>(keep));
        return;
      }
      case OpId::softmax:
      case OpId::log_softmax: {
        pb::NodeProto* n;
        out(0, op1(id == OpId::softmax ? "Softmax" : "LogSoftmax", {cast(in(0), tin(0).dtype(), tout(0).dtype())}, &n));
        attr(n, "axis", wrap(ai("dim"), tin(0).dim()));
        return;
      }
      // products
      case OpId::matmul:
      case OpId::bmm:
        out(0, binary("MatMul", in(0), in(1)));
        return;
      case OpId::linear: {
        const std::string x = in(0), w = in(1);
        if (tin(0).dim() == 2) {
          pb::NodeProto* n;
          out(0, op1("Gemm", has(2) ? std::vector<std::string>{x, w, in(2)} : std::vector<std::string>{x, w}, &n));
          attr(n, "transB", int64_t{1});
          return;
        }
        pb::NodeProto* n;
        const std::string wt = op1("Transpose", {w}, &n);
        attr(n, "perm", std::vector<int64_t>{1, 0});
        std::string y = binary("MatMul", x, wt);
        if (has(2)) y = binary("Add", y, in(2));
        out(0, y);
        return;
      }
      // indexing and joining
      case OpId::gather: {
        pb::NodeProto* n;
        out(0, op1("GatherElements", {in(0), cast(in(1), tin(1).dtype(), DType::i64)}, &n));
        attr(n, "axis", wrap(ai("dim"), tin(0).dim()));
        return;
      }
      case OpId::index_select: {
        pb::NodeProto* n;
        out(0, op1("Gather", {in(0), in(1)}, &n));
        attr(n, "axis", wrap(ai("dim"), tin(0).dim()));
        return;
      }
      case OpId::embedding: {
        pb::NodeProto* n;
        out(0, op1("Gather", {in(0), in(1)}, &n));
        attr(n, "axis", int64_t{0});
        return;
      }
      case OpId::one_hot: {
        const int64_t depth = tout(0).size(tout(0).dim() - 1);
        const DType dt = tout(0).dtype();
        out(0, op1("OneHot", {in(0), const_i64({depth}), constant(std::vector<double>{0.0, 1.0}, {2}, dt)}));
        return;
      }
      case OpId::cat:
      case OpId::stack: {
        const int64_t dim = wrap(ai("dim"), tout(0).dim());
        std::vector<std::string> parts;
        const DType dt = tout(0).dtype();
        for (size_t j = 0; j < c.inputs.size(); ++j) {
          std::string v = cast(in(j), tin(j).dtype(), dt);
          parts.push_back(id == OpId::stack ? unsqueeze(v, {dim}) : v);
        }
        pb::NodeProto* n;
        out(0, op1("Concat", parts, &n));
        attr(n, "axis", dim);
        return;
      }
      case OpId::split:
      case OpId::split_sizes:
      case OpId::chunk: {
        const int64_t dim = wrap(ai("dim"), tin(0).dim());
        std::vector<int64_t> sizes;
        std::vector<std::string> outs;
        for (size_t k = 0; k < c.outputs.size(); ++k) {
          EMBER_CHECK(c.outputs[k].size(dim) == B_[i_].outputs[k].size(dim), kWhere, "op '", c.def->name, "' (call ",
                      i_, ") splits along a dynamic axis; not supported");
          sizes.push_back(c.outputs[k].size(dim));
          outs.push_back(fresh());
        }
        pb::NodeProto* n = node("Split", {in(0), const_i64(sizes)}, outs);
        attr(n, "axis", dim);
        for (size_t k = 0; k < outs.size(); ++k) out(k, outs[k]);
        return;
      }
      case OpId::pad: {
        const std::vector<int64_t> pads = av("pads");
        const int64_t r = tin(0).dim();
        std::vector<int64_t> onnx_pads(static_cast<size_t>(2 * r), 0);
        for (size_t p = 0; p < pads.size() / 2; ++p) {
          const int64_t d = r - 1 - static_cast<int64_t>(p);
          onnx_pads[static_cast<size_t>(d)] = pads[2 * p];
          onnx_pads[static_cast<size_t>(d + r)] = pads[2 * p + 1];
        }
        out(0, op1("Pad", {in(0), const_i64(onnx_pads), scalar(ad("value"), tin(0).dtype())}));
        return;
      }
      // sequence layers
      case OpId::conv1d: {
        const int64_t p = ai("padding");
        pb::NodeProto* n;
        out(0,
            op1("Conv", has(2) ? std::vector<std::string>{in(0), in(1), in(2)} : std::vector<std::string>{in(0), in(1)},
                &n));
        attr(n, "kernel_shape", std::vector<int64_t>{tin(1).size(2)});
        attr(n, "strides", std::vector<int64_t>{ai("stride")});
        attr(n, "pads", std::vector<int64_t>{p, p});
        attr(n, "dilations", std::vector<int64_t>{ai("dilation")});
        attr(n, "group", ai("groups"));
        return;
      }
      case OpId::max_pool1d:
      case OpId::avg_pool1d: {
        const int64_t k = ai("kernel"), p = ai("padding");
        const int64_t s = aopt("stride").value_or(k);
        pb::NodeProto* n;
        out(0, op1(id == OpId::max_pool1d ? "MaxPool" : "AveragePool", {in(0)}, &n));
        attr(n, "kernel_shape", std::vector<int64_t>{k});
        attr(n, "strides", std::vector<int64_t>{s});
        attr(n, "pads", std::vector<int64_t>{p, p});
        if (id == OpId::avg_pool1d) attr(n, "count_include_pad", int64_t{1});  // zeros padded in, as ember
        return;
      }
      case OpId::global_max_pool1d:
      case OpId::global_avg_pool1d:
        out(0, reduce(id == OpId::global_max_pool1d ? "ReduceMax" : "ReduceMean", in(0), {tin(0).dim() - 1},
                      ab("keepdim")));
        return;
      case OpId::layer_norm: {
        const Shape ns = av("normalized_shape");
        const DType dt = tin(0).dtype();
        std::string scale = has(1) ? in(1) : "";
        if (scale.empty()) {
          scale = binary("Expand", scalar(1.0, dt), const_i64(ns));
        }
        pb::NodeProto* n;
        out(0,
            op1("LayerNormalization",
                has(2) ? std::vector<std::string>{in(0), scale, in(2)} : std::vector<std::string>{in(0), scale}, &n));
        attr(n, "axis", -static_cast<int64_t>(ns.size()));
        attr(n, "epsilon", ad("eps"));
        return;
      }
      case OpId::scaled_dot_product_attention:
        return attention(c);
      case OpId::rnn_recurrence:
        return recurrence();
      case OpId::hsoftmax_full_log_prob:
      case OpId::hsoftmax_tree_log_prob:
      case OpId::hsoftmax_log_prob:
      case OpId::hsoftmax_topk:
        return hsoftmax(id);
      default:
        break;
    }
    const std::string_view name = c.def->name;
    if (name.find("int8") != std::string_view::npos || name == "quantize_rows")
      unsupported("a quantised model is not exported; export the f32 model (quantise in the runtime)");
    unsupported(
        "there is no ONNX mapping for it (losses, backward primitives, unfold and the index updates "
        "scatter_add / index_add are not exported; docs/deploy.md lists the ops that are)");
  }

  // A tensor an op reads that is not one of its op inputs (an attention mask): the value it
  // views, or a constant.
  std::string nested(const Tensor& t, const std::string& what) {
    if (auto it = names_.find(t.impl_ptr().get()); it != names_.end()) return it->second;
    if (auto it = views_.find(view_key(t)); it != views_.end()) return it->second;
    // The same memory as a traced value under another shape (a mask unsqueezed to 4-D).
    for (const Tensor& k : kept_)
      if (k.impl().storage.get() == t.impl().storage.get() && k.offset() == t.offset() && k.numel() == t.numel() &&
          k.dtype() == t.dtype() && k.is_contiguous() && t.is_contiguous())
        return binary("Reshape", names_.at(k.impl_ptr().get()), const_i64(t.shape()));
    return resolve(t, nullptr, what);
  }

  void attention(const TracedCall& c) {
    const Tensor& q = tin(0);
    const DType dt = q.dtype();
    if (std::get<double>(at("dropout")) > 0) unsupported("attention dropout > 0 (export in eval mode)");
    const std::string qn = in(0), kn = in(1), vn = in(2);
    const std::optional<double> sc = aoptd("scale");
    const double scale = sc ? *sc : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    pb::NodeProto* n;
    const std::string kt = op1("Transpose", {kn}, &n);
    attr(n, "perm", std::vector<int64_t>{0, 1, 3, 2});
    std::string s = binary("Mul", binary("MatMul", qn, kt), scalar(scale, dt));
    const double inf = std::numeric_limits<double>::infinity();
    std::string allowed;
    auto allow = [&](const std::string& a) { allowed = allowed.empty() ? a : binary("And", allowed, a); };
    if (ab("has_attn_mask")) {
      // The attention's first to_dtype / unsqueeze / expand (preparing its mask for the kernel)
      // reads attn_mask.detach(), which resolves to the mask's graph value.
      const NestedCall* e = nullptr;
      for (const auto& nc : c.nested)
        if (!e && (nc.id == OpId::to_dtype || nc.id == OpId::unsqueeze || nc.id == OpId::expand)) e = &nc;
      EMBER_CHECK(e != nullptr, kWhere, "op 'scaled_dot_product_attention' (call ", i_,
                  "): could not find its attn_mask in the trace");
      const Tensor& m = e->inputs.at(0);
      const std::string mv = nested(m, "the attn_mask of op 'scaled_dot_product_attention'");
      if (m.dtype() == DType::boolean)
        allow(mv);
      else
        s = binary("Add", s, cast(mv, m.dtype(), dt));
    }
    if (ab("has_key_padding_mask")) {
      const NestedCall* e = nullptr;
      for (const auto& nc : c.nested)
        if (nc.id == OpId::contiguous && !e && nc.inputs.at(0).dtype() == DType::boolean && nc.inputs.at(0).dim() == 2)
          e = &nc;
      EMBER_CHECK(e != nullptr, kWhere, "op 'scaled_dot_product_attention' (call ", i_,
                  "): could not find its key_padding_mask in the trace");
      const std::string kpm = nested(e->inputs.at(0), "the key_padding_mask of op 'scaled_dot_product_attention'");
      allow(unary("Not", unsqueeze(kpm, {1, 2})));
    }
    if (ab("causal")) {
      // key j is allowed for query i iff j <= i + (Tk - Tq)
      pb::NodeProto* sn;
      const std::string tq = squeeze(op1("Shape", {qn}, &sn), {0});
      attr(sn, "start", int64_t{2});
      attr(sn, "end", int64_t{3});
      const std::string tk = squeeze(op1("Shape", {kn}, &sn), {0});
      attr(sn, "start", int64_t{2});
      attr(sn, "end", int64_t{3});
      const std::string zero = constant(std::vector<int64_t>{0}, {}, DType::i64);
      const std::string one = constant(std::vector<int64_t>{1}, {}, DType::i64);
      const std::string rows = binary("Add", op1("Range", {zero, tq, one}), binary("Sub", tk, tq));
      const std::string cols = op1("Range", {zero, tk, one});
      allow(binary("LessOrEqual", unsqueeze(cols, {0}), unsqueeze(rows, {1})));
    }
    std::string p;
    if (!allowed.empty()) {
      s = op1("Where", {allowed, s, scalar(-inf, dt)});
      // A row with no allowed key gives zeros, as ember does (not NaN).
      pb::NodeProto* rn;
      p = op1("Softmax", {s}, &rn);
      attr(rn, "axis", int64_t{-1});
      const std::string any = reduce("ReduceMax", cast(allowed, DType::boolean, DType::i32), {-1}, true);
      const std::string ok = cast(any, DType::i32, DType::boolean);
      p = op1("Where", {ok, p, scalar(0.0, dt)});
    } else {
      pb::NodeProto* rn;
      p = op1("Softmax", {s}, &rn);
      attr(rn, "axis", int64_t{-1});
    }
    out(0, binary("MatMul", p, vn));
  }

  // nn::RNNBase computes a layer's gates_x as view(matmul(reshape(x, (T*N, C)), w_ih.t()))
  // (+ b_ih for GRU): then ONNX's X is x (T, N, C) and W is w_ih, as in PyTorch's export.
  struct Projection {
    std::string x, w, b;
  };
  std::optional<Projection> projection(const Tensor& gx) {
    auto is = [](const TracedCall* c, OpId a, OpId b) { return c && (c->def->id == a || c->def->id == b); };
    const TracedCall* v = producer(gx);
    if (!is(v, OpId::view, OpId::reshape)) return std::nullopt;
    const TracedCall* m = producer(v->inputs.at(0));
    Tensor bias;
    if (is(m, OpId::add, OpId::add) && m->inputs.size() == 2 && m->inputs[1].dim() == 1) {
      const AttrValue* alpha = find_attr(*m, "alpha");
      if (!alpha || std::get<double>(*alpha) != 1.0) return std::nullopt;
      bias = m->inputs[1];
      m = producer(m->inputs[0]);
    }
    if (!is(m, OpId::matmul, OpId::matmul) || m->inputs.size() != 2) return std::nullopt;
    const TracedCall* t = producer(m->inputs[1]);
    const TracedCall* f = producer(m->inputs[0]);
    if (!is(t, OpId::transpose, OpId::transpose) || t->inputs.at(0).dim() != 2 || !is(f, OpId::reshape, OpId::view))
      return std::nullopt;
    const Tensor& x = f->inputs.at(0);
    const Tensor& w = t->inputs.at(0);
    if (x.dim() != 3 || x.size(0) != gx.size(0) || x.size(1) != gx.size(1) || w.size(0) != gx.size(2) ||
        w.size(1) != x.size(2))
      return std::nullopt;
    Projection p{resolve_free(x, "the recurrence's input"), resolve_free(w, "the recurrence's W_ih"), ""};
    if (bias.defined()) p.b = resolve_free(bias, "the recurrence's b_ih");
    return p;
  }

  void recurrence() {
    const std::string mode = as("mode");
    const bool reverse = ab("reverse");
    const Tensor& gx = tin(0);
    const Tensor& whh = tin(1);
    const int64_t H = whh.size(1), GH = whh.size(0), G = GH / H;
    const DType dt = gx.dtype();
    std::vector<int64_t> perm;  // ONNX gate block b takes ember's block perm[b]
    std::string type;
    if (mode == "LSTM")
      type = "LSTM", perm = {0, 3, 1, 2};  // ember i f g o -> ONNX i o f c
    else if (mode == "GRU")
      type = "GRU", perm = {1, 0, 2};  // ember r z n -> ONNX z r h
    else
      type = "RNN", perm = {0};
    EMBER_CHECK(static_cast<int64_t>(perm.size()) == G, kWhere, "op 'rnn_recurrence' (call ", i_, "): mode ", mode,
                " with ", G, " gate blocks");
    std::vector<int64_t> rows;
    for (int64_t b : perm)
      for (int64_t r = 0; r < H; ++r) rows.push_back(b * H + r);
    auto gate_rows = [&](const std::string& v) {  // v's rows in ONNX's gate order
      pb::NodeProto* gn;
      const std::string r = op1("Gather", {v, const_i64(rows)}, &gn);
      attr(gn, "axis", int64_t{0});
      return r;
    };
    std::string X, W, Wb;
    if (const std::optional<Projection> p = projection(gx)) {
      // The layer's own input and W_ih: the traced projection is left unused and pruned.
      X = p->x;
      W = unsqueeze(gate_rows(p->w), {0});
      if (!p->b.empty()) Wb = gate_rows(p->b);
    } else {
      // X is the precomputed projection itself: W is the gate permutation (exact in floating point).
      std::vector<double> w(static_cast<size_t>(GH * GH), 0.0);
      for (int64_t k = 0; k < GH; ++k) w[static_cast<size_t>(k * GH + rows[static_cast<size_t>(k)])] = 1.0;
      X = in(0);
      W = constant(w, {1, GH, GH}, dt);
    }
    const std::string R = unsqueeze(gate_rows(in(1)), {0});
    std::string B;
    if (has(2) || !Wb.empty()) {
      const std::string zeros = binary("Expand", scalar(0.0, dt), const_i64({GH}));
      pb::NodeProto* cn;
      const std::string both = op1("Concat", {Wb.empty() ? zeros : Wb, has(2) ? gate_rows(in(2)) : zeros}, &cn);
      attr(cn, "axis", int64_t{0});
      B = unsqueeze(both, {0});
    }
    const std::string lens = has(5) ? cast(in(5), tin(5).dtype(), DType::i32) : "";
    const std::string h0 = has(3) ? unsqueeze(in(3), {0}) : "";
    std::vector<std::string> ins{X, W, R, B, lens, h0};
    if (type == "LSTM") ins.push_back(has(4) ? unsqueeze(in(4), {0}) : "");
    while (!ins.empty() && ins.back().empty()) ins.pop_back();
    const std::string y = fresh(), yh = fresh(), yc = fresh();
    std::vector<std::string> outs{y, yh};
    if (type == "LSTM") outs.push_back(yc);
    pb::NodeProto* n = node(type, ins, outs);
    attr(n, "hidden_size", H);
    attr(n, "direction", std::string(reverse ? "reverse" : "forward"));
    if (type == "GRU") attr(n, "linear_before_reset", int64_t{1});
    if (type == "RNN") attr(n, "activations", std::vector<std::string>{mode == "RNN_RELU" ? "Relu" : "Tanh"});
    out(0, squeeze(y, {1}));
    out(1, squeeze(yh, {0}));
    if (type == "LSTM" && A_[i_].outputs.size() > 2 && A_[i_].outputs[2].defined()) out(2, squeeze(yc, {0}));
  }

  const HsTables& tree_for(int64_t num_classes, int64_t num_nodes) {
    auto key = std::make_pair(num_classes, num_nodes);
    if (auto it = trees_.find(key); it != trees_.end()) return it->second;
    const nn::HierarchicalSoftmax* found = nullptr;
    std::vector<const nn::Module*> stack{&module_};
    while (!stack.empty() && !found) {
      const nn::Module* m = stack.back();
      stack.pop_back();
      if (auto* h = dynamic_cast<const nn::HierarchicalSoftmax*>(m)) {
        const HSoftmaxTree t = h->tree_tables();
        if (t.num_classes == num_classes && (num_nodes < 0 || t.num_nodes == num_nodes)) found = h;
      }
      for (const auto& [name, child] : m->named_children()) stack.push_back(child.get());
    }
    EMBER_CHECK(found != nullptr, kWhere, "op '", A_[i_].def->name, "' (call ", i_,
                "): its class tree is not in the exported module; export a module that holds the "
                "nn::HierarchicalSoftmax (",
                num_classes, " classes, ", num_nodes, " nodes)");
    return trees_.emplace(key, hs_tables(*found)).first->second;
  }

  // (N, S) node logits -> (N, C) class log-probabilities, composed (docs/deploy.md).
  std::string tree_log_prob(const std::string& logits, const HsTables& t, DType dt) {
    pb::NodeProto* n;
    const std::string N1 = [&] {
      pb::NodeProto* sn;
      const std::string s = op1("Shape", {logits}, &sn);
      attr(sn, "start", int64_t{0});
      attr(sn, "end", int64_t{1});
      return s;
    }();
    auto zero_col = [&] {
      pb::NodeProto* cn;
      const std::string shape = op1("Concat", {N1, const_i64({1})}, &cn);
      attr(cn, "axis", int64_t{0});
      return binary("Expand", scalar(0.0, dt), shape);
    };
    const std::string z = op1("Concat", {logits, zero_col()}, &n);  // (N, S + 1)
    attr(n, "axis", int64_t{1});
    const std::string g = op1("Gather", {z, constant(t.node_rows, {t.I, t.A}, DType::i64)}, &n);  // (N, I, A)
    attr(n, "axis", int64_t{1});
    std::vector<double> mask(t.node_mask.begin(), t.node_mask.end());
    const std::string ls = op1("LogSoftmax", {binary("Add", g, constant(mask, {t.I, t.A}, dt))}, &n);
    attr(n, "axis", int64_t{2});
    const std::string flat = binary("Reshape", ls, const_i64({0, t.I * t.A}));
    const std::string padded = op1("Concat", {flat, zero_col()}, &n);
    attr(n, "axis", int64_t{1});
    const std::string e = op1("Gather", {padded, constant(t.paths, {t.C, t.depth}, DType::i64)}, &n);  // (N, C, depth)
    attr(n, "axis", int64_t{1});
    return reduce("ReduceSum", e, {2}, false);
  }

  void hsoftmax(OpId id) {
    // top-k reports no node count: the class count picks the tree
    const HsTables& t = tree_for(ai("num_classes"), id == OpId::hsoftmax_topk ? -1 : ai("num_nodes"));
    const DType dt = tin(0).dtype();
    std::string logits;
    if (id == OpId::hsoftmax_tree_log_prob) {
      logits = in(0);
    } else {
      pb::NodeProto* n;
      logits = op1("Gemm",
                   has(2) ? std::vector<std::string>{in(0), in(1), in(2)} : std::vector<std::string>{in(0), in(1)}, &n);
      attr(n, "transB", int64_t{1});
    }
    const std::string full = tree_log_prob(logits, t, dt);
    if (id == OpId::hsoftmax_full_log_prob || id == OpId::hsoftmax_tree_log_prob) return out(0, full);
    if (id == OpId::hsoftmax_log_prob) {
      const Tensor& cls = tin(3);
      std::string ci = cast(in(3), cls.dtype(), DType::i64);
      if (cls.dim() == 1) ci = unsqueeze(ci, {1});
      pb::NodeProto* n;
      std::string r = op1("GatherElements", {full, ci}, &n);
      attr(n, "axis", int64_t{1});
      out(0, cls.dim() == 1 ? squeeze(r, {1}) : r);
      return;
    }
    // top-k: the exact top k of the full distribution (ember's beam search gives the same
    // classes once the beam is wide enough, docs/hsoftmax.md)
    const std::string vals = fresh(), idx = fresh();
    pb::NodeProto* n = node("TopK", {full, const_i64({ai("k")})}, {vals, idx});
    attr(n, "axis", int64_t{1});
    out(0, vals);
    out(1, idx);
  }

  nn::Module& module_;
  const std::vector<TracedCall>& A_;
  const std::vector<TracedCall>& B_;
  std::vector<Sym> syms_;
  pb::ModelProto model_;
  pb::GraphProto* g_ = nullptr;
  size_t i_ = 0;
  int64_t uid_ = 0, nodes_ = 0, consts_ = 0;
  std::unordered_map<const void*, std::string> names_, params_;
  std::map<ViewKey, std::string> views_, param_views_;
  std::map<std::string, Tensor> param_tensors_;
  std::set<std::string> initialised_;
  std::map<std::string, std::string> sym_cache_;
  std::map<std::pair<int64_t, int64_t>, HsTables> trees_;
  std::vector<Tensor> kept_;
  std::unordered_map<std::string, size_t> producer_;  // value -> the call that computed it
};

void set_value_info(pb::ValueInfoProto* vi, const std::string& name, const Tensor& a, const Tensor& b,
                    const std::map<int64_t, std::string>* dyn, const std::vector<Sym>& syms) {
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx_type(a.dtype(), name));
  auto* shape = tt->mutable_shape();
  for (int64_t d = 0; d < a.dim(); ++d) {
    auto* dim = shape->add_dim();
    if (dyn) {
      if (auto it = dyn->find(d); it != dyn->end()) {
        dim->set_dim_param(it->second);
        continue;
      }
    }
    if (a.size(d) == b.size(d)) {
      dim->set_dim_value(a.size(d));
      continue;
    }
    for (const Sym& s : syms)
      if (s.a == a.size(d) && s.b == b.size(d)) {
        dim->set_dim_param(s.name);
        break;
      }
  }
}

// Grows x along `axis` to `size` by repeating its elements from the start (valid indices stay
// valid, lengths stay within the longer sequence).
Tensor grow(const Tensor& x, int64_t axis, int64_t size) {
  const int64_t n = x.size(axis);
  std::vector<int64_t> idx(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) idx[static_cast<size_t>(i)] = i % n;
  return contiguous(index_select(x, axis, from_vector<int64_t>(idx, {size})));
}

void write_atomically(const pb::ModelProto& model, const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  EMBER_CHECK(fs::is_directory(dir), kWhere, "cannot write '", path, "': directory '", dir.string(),
              "' does not exist");
  std::string bytes;
  EMBER_CHECK(model.SerializeToString(&bytes), kWhere, "cannot serialise the model for '", path,
              "' (protobuf refused it; a model over 2 GiB needs external data, which is not supported)");
  ember::detail::write_file_atomically(kWhere, path, {bytes});
}

// Runs forward under the tracer (eval mode, no autograd).
std::vector<TracedCall> trace(const ForwardFn& forward, const std::vector<Tensor>& inputs, std::vector<Tensor>& outs) {
  Tracer tracer;
  {
    NoGradGuard no_grad;
    ObserveOps guard(tracer);
    outs = forward(inputs);
  }
  return std::move(tracer.calls);
}

}  // namespace

void export_onnx(nn::Module& module, const std::vector<Tensor>& example_inputs, const std::string& path,
                 const ExportOptions& options, const ForwardFn& forward) {
  EMBER_CHECK(static_cast<bool>(forward), kWhere, "no forward function given");
  for (const auto& [name, p] : module.named_parameters())
    EMBER_CHECK(p.device().is_cpu(), kWhere, "module ", module.type_name(), ": parameter '", name, "' is on ",
                p.device().str(), "; export runs the model on the CPU: move it first with module.to(Device::cpu())");
  for (const auto& [name, p] : module.named_buffers())
    EMBER_CHECK(p.device().is_cpu(), kWhere, "module ", module.type_name(), ": buffer '", name, "' is on ",
                p.device().str(), "; move the module to the CPU first");
  std::vector<std::string> in_names, out_names;
  for (size_t i = 0; i < example_inputs.size(); ++i) {
    const Tensor& t = example_inputs[i];
    in_names.push_back(i < options.input_names.size() ? options.input_names[i] : "input_" + std::to_string(i));
    EMBER_CHECK(t.defined(), kWhere, "example input ", i, " ('", in_names.back(), "') is undefined");
    EMBER_CHECK(t.device().is_cpu(), kWhere, "example input ", i, " ('", in_names.back(), "') is on ", t.device().str(),
                "; export runs on the CPU");
  }
  for (const auto& [name, axes] : options.dynamic_axes) {
    (void)axes;
    const bool known =
        std::find(in_names.begin(), in_names.end(), name) != in_names.end() ||
        std::find(options.output_names.begin(), options.output_names.end(), name) != options.output_names.end();
    EMBER_CHECK(known, kWhere, "dynamic_axes names '", name, "', which is neither an input nor an output name");
  }

  // Dynamic axes of the inputs: each name grows by (its rank among the names) + 1.
  std::vector<Sym> syms;
  std::map<std::string, int64_t> grown;  // name -> size in trace B
  std::vector<Tensor> inputs_b = example_inputs;
  for (size_t i = 0; i < example_inputs.size(); ++i) {
    auto it = options.dynamic_axes.find(in_names[i]);
    if (it == options.dynamic_axes.end()) continue;
    for (const auto& [axis_in, sym] : it->second) {
      const Tensor& t = example_inputs[i];
      const int64_t axis = wrap(axis_in, t.dim());
      EMBER_CHECK(axis >= 0 && axis < t.dim(), kWhere, "dynamic axis ", axis_in, " of input '", in_names[i],
                  "' is outside its ", t.dim(), " dims");
      EMBER_CHECK(t.size(axis) >= 1, kWhere, "dynamic axis ", axis, " of input '", in_names[i],
                  "' has size 0 in the example; give an example with at least one element there");
      auto [g, fresh] = grown.emplace(sym, t.size(axis) + static_cast<int64_t>(grown.size()) + 1);
      (void)fresh;
      syms.push_back({sym, in_names[i], axis, t.size(axis), g->second});
      inputs_b[i] = grow(inputs_b[i], axis, g->second);
    }
  }
  // The same name on two inputs must mean the same size.
  for (const Sym& s : syms)
    for (const Sym& o : syms)
      EMBER_CHECK(s.name != o.name || s.a == o.a, kWhere, "dynamic axis '", s.name, "' has size ", s.a, " in input '",
                  s.input, "' but ", o.a, " in input '", o.input, "'");

  const bool was_training = module.is_training();
  module.eval();
  std::vector<Tensor> outs_a, outs_b;
  std::vector<TracedCall> a, b;
  try {
    a = trace(forward, example_inputs, outs_a);
    if (!syms.empty()) b = trace(forward, inputs_b, outs_b);
  } catch (...) {
    module.train(was_training);
    throw;
  }
  module.train(was_training);
  if (syms.empty()) b = a, outs_b = outs_a;

  EMBER_CHECK(!outs_a.empty(), kWhere, "the forward returned no tensors");
  if (a.size() != b.size() || outs_a.size() != outs_b.size()) {
    size_t k = 0;
    while (k < a.size() && k < b.size() && a[k].def == b[k].def) ++k;
    throw Error(kWhere,
                "the forward calls different ops when the dynamic axes change size (" + std::to_string(a.size()) +
                    " vs " + std::to_string(b.size()) + " op calls; first difference at call " + std::to_string(k) +
                    ": '" + (k < a.size() ? a[k].def->name : "end") + "' vs '" +
                    (k < b.size() ? b[k].def->name : "end") +
                    "'): control flow that depends on the input size or values cannot be traced; export with static "
                    "axes, or keep the loop out of the traced forward");
  }
  for (size_t k = 0; k < a.size(); ++k) {
    EMBER_CHECK(a[k].def == b[k].def, kWhere,
                "the forward calls different ops when the dynamic axes change size (call ", k, ": '", a[k].def->name,
                "' vs '", b[k].def->name, "'): data-dependent control flow cannot be traced; export with static axes");
    for (const Tensor& t : a[k].inputs)
      EMBER_CHECK(
          !t.defined() || (t.dtype() != DType::f16 && t.dtype() != DType::bf16) || a[k].def->id == OpId::to_dtype,
          kWhere, "op '", a[k].def->name, "' (call ", k, ") reads a ", t.dtype(),
          " tensor; export an f32 (or f64) model: convert it with module.to(DType::f32)");
  }

  Exporter ex(module, a, b, syms);
  pb::ModelProto& model = ex.model();
  model.set_ir_version(kIrVersion);
  model.set_producer_name("ember");
  model.set_producer_version("0.1.0");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  pb::GraphProto& g = ex.graph();
  g.set_name(options.graph_name);
  if (!options.doc_string.empty()) model.set_doc_string(options.doc_string);
  for (size_t i = 0; i < example_inputs.size(); ++i) {
    auto it = options.dynamic_axes.find(in_names[i]);
    set_value_info(g.add_input(), in_names[i], example_inputs[i], inputs_b[i],
                   it == options.dynamic_axes.end() ? nullptr : &it->second, syms);
    ex.add_input(example_inputs[i], in_names[i]);
  }
  ex.run();
  std::set<std::string> used(in_names.begin(), in_names.end());
  for (size_t k = 0; k < outs_a.size(); ++k) {
    out_names.push_back(k < options.output_names.size() ? options.output_names[k] : "output_" + std::to_string(k));
    EMBER_CHECK(used.insert(out_names.back()).second, kWhere, "the name '", out_names.back(), "' is used twice");
    EMBER_CHECK(outs_a[k].defined(), kWhere, "output ", k, " ('", out_names[k], "') is undefined");
    ex.add_output(outs_a[k], out_names[k]);
    auto it = options.dynamic_axes.find(out_names[k]);
    set_value_info(g.add_output(), out_names[k], outs_a[k], outs_b[k],
                   it == options.dynamic_axes.end() ? nullptr : &it->second, syms);
  }
  ex.prune();
  write_atomically(model, path);
  if (!options.sample_path.empty()) {
    StateDict sample;
    for (size_t i = 0; i < example_inputs.size(); ++i)
      sample.tensors.emplace_back("input." + in_names[i], example_inputs[i]);
    for (size_t k = 0; k < outs_a.size(); ++k)
      sample.tensors.emplace_back("output." + out_names[k], outs_a[k].detach());
    save_safetensors(options.sample_path, sample);
  }
}

}  // namespace ember::io
