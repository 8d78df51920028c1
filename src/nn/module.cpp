// Module bookkeeping: parameters, buffers and submodules are kept in registration order, so
// named_parameters() and state_dict() are deterministic (optimizer state and checkpoints rely
// on that).
#include "ember/nn/module.h"

#include <cxxabi.h>

#include <cstdlib>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>
#include <typeinfo>

#include "ember/autograd/grad_mode.h"
#include "ember/core/error.h"
#include "ember/ops/ops.h"

namespace ember::nn {

namespace {
using Named = std::vector<std::pair<std::string, Tensor>>;

// Tensors with duplicates (the same TensorImpl reached twice) removed, first one kept.
std::vector<Tensor> unique_tensors(const Named& named) {
  std::vector<Tensor> out;
  for (const auto& [name, t] : named) {
    bool seen = false;
    for (const Tensor& q : out) seen = seen || q.is_same(t);
    if (!seen) out.push_back(t);
  }
  return out;
}

void check_name(const char* op, const char* what, const std::string& name) {
  EMBER_CHECK(!name.empty() && name.find('.') == std::string::npos, op, what,
              " name must be non-empty and contain no '.', got \"", name, "\"");
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  Named out = params_;
  for (const auto& [name, child] : children_)
    for (auto& [sub, t] : child->named_parameters()) out.emplace_back(name + "." + sub, t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  Named out = buffers_;
  for (const auto& [name, child] : children_)
    for (auto& [sub, t] : child->named_buffers()) out.emplace_back(name + "." + sub, t);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<Tensor> Module::buffers() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_buffers()) out.push_back(t);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const auto& t : parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.set_grad(Tensor());
}

// --- state dicts ---------------------------------------------------------------------------------

StateDict Module::state_dict() const {
  StateDict sd;
  for (auto& [name, t] : named_parameters()) sd.tensors.emplace_back(name, t.detach());
  for (auto& [name, t] : named_buffers()) sd.tensors.emplace_back(name, t.detach());
  return sd;
}

std::vector<std::string> Module::check_state_dict(const StateDict& sd, bool strict) const {
  Named mine = named_parameters();
  for (auto& b : named_buffers()) mine.push_back(b);
  std::map<std::string, const Tensor*> given;
  std::vector<std::string> problems;
  for (const auto& [name, t] : sd.tensors) {
    if (!given.emplace(name, &t).second) problems.push_back("tensor \"" + name + "\" appears twice");
  }
  std::set<std::string> known;
  std::vector<std::string> missing, shapes;
  for (const auto& [name, t] : mine) {
    known.insert(name);
    auto it = given.find(name);
    if (it == given.end()) {
      if (strict) missing.push_back(name);
      continue;
    }
    const Tensor& src = *it->second;
    if (!src.defined()) {
      problems.push_back("tensor \"" + name + "\" is undefined");
    } else if (src.shape() != t.shape()) {
      shapes.push_back("\"" + name + "\" has shape " + shape_str(src.shape()) + " in the state dict but " +
                       shape_str(t.shape()) + " in the module");
    }
  }
  std::vector<std::string> unexpected;
  if (strict)
    for (const auto& [name, t] : sd.tensors)
      if (!known.count(name)) unexpected.push_back(name);
  auto quoted = [](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", \"" : "\"") + v[i] + "\"";
    return s;
  };
  if (!missing.empty()) problems.push_back("missing keys (in the module, not in the state dict): " + quoted(missing));
  if (!unexpected.empty())
    problems.push_back("unexpected keys (in the state dict, not in the module): " + quoted(unexpected));
  if (!shapes.empty()) {
    std::string s = "mis-shaped keys: ";
    for (size_t i = 0; i < shapes.size(); ++i) s += (i ? "; " : "") + shapes[i];
    problems.push_back(s);
  }
  return problems;
}

void Module::load_state_dict(const StateDict& sd, bool strict) {
  const std::vector<std::string> problems = check_state_dict(sd, strict);
  if (!problems.empty()) {
    std::string msg = type_name() + ": " + std::to_string(problems.size()) + " problem(s): ";
    for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
    EMBER_FAIL("load_state_dict", msg);
  }
  Named mine = named_parameters();
  for (auto& b : named_buffers()) mine.push_back(b);
  // Convert first (may allocate and throw), then copy: nothing below allocates but copy_.
  std::vector<std::pair<Tensor, Tensor>> plan;
  {
    NoGradGuard no_grad;
    for (const auto& [name, dst] : mine) {
      Tensor src = sd.find(name);
      if (!src.defined()) continue;
      src = src.detach();
      if (src.dtype() != dst.dtype()) src = to_dtype(src, dst.dtype());
      if (src.device() != dst.device()) src = to_device(src, dst.device());
      plan.emplace_back(dst, src);
    }
    for (auto& [dst, src] : plan) {
      Tensor d = dst.detach();  // same storage: writes the parameter's memory
      d.copy_(src);
    }
  }
}

// --- moving and converting -----------------------------------------------------------------------

template <class F>
void Module::convert_in_place(const std::vector<Tensor>& tensors, F convert) {
  std::vector<Tensor> converted;
  converted.reserve(tensors.size());
  {
    NoGradGuard no_grad;  // a copy, not a differentiable op: parameters stay leaves
    for (const Tensor& t : tensors) converted.push_back(convert(t));
  }
  // Nothing below throws: swap the memory of each TensorImpl for the copy's.
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!converted[i].defined()) continue;
    TensorImpl& dst = tensors[i].impl();
    TensorImpl& src = converted[i].impl();
    dst.storage = src.storage;
    dst.strides = src.strides;
    dst.offset = src.offset;
    dst.dtype = src.dtype;
    dst.autograd.grad.reset();
  }
}

Module& Module::to(Device device) {
  Named all = named_parameters();
  for (auto& b : named_buffers()) all.push_back(b);
  convert_in_place(unique_tensors(all), [&](const Tensor& t) {
    return t.device() == device ? Tensor() : to_device(t.detach(), device);
  });
  return *this;
}

Module& Module::to(DType dtype) {
  EMBER_CHECK(is_floating(dtype), "Module::to", "modules convert to a floating dtype, got ", dtype_name(dtype));
  Named all = named_parameters();
  for (auto& b : named_buffers()) all.push_back(b);
  convert_in_place(unique_tensors(all), [&](const Tensor& t) {
    return !is_floating(t.dtype()) || t.dtype() == dtype ? Tensor() : to_dtype(t.detach(), dtype);
  });
  return *this;
}

// --- registration ----------------------------------------------------------------------------------

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  EMBER_CHECK(!name.empty() && name.find('.') == std::string::npos, "register_parameter",
              "parameter name must be non-empty and contain no '.', got \"", name, "\"");
  EMBER_CHECK(t.defined(), "register_parameter", "parameter \"", name, "\" is an undefined tensor");
  for (const auto& p : params_) {
    EMBER_CHECK(p.first != name, "register_parameter", "parameter \"", name, "\" registered twice");
  }
  for (const auto& b : buffers_) {
    EMBER_CHECK(b.first != name, "register_parameter", "\"", name, "\" is already a buffer");
  }
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_name("register_buffer", "buffer", name);
  EMBER_CHECK(t.defined(), "register_buffer", "buffer \"", name, "\" is an undefined tensor");
  for (const auto& b : buffers_) {
    EMBER_CHECK(b.first != name, "register_buffer", "buffer \"", name, "\" registered twice");
  }
  for (const auto& p : params_) {
    EMBER_CHECK(p.first != name, "register_buffer", "\"", name, "\" is already a parameter");
  }
  EMBER_CHECK(!t.requires_grad(), "register_buffer", "buffer \"", name,
              "\" requires grad; buffers are not trained (detach it, or register a parameter)");
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_name("register_module", "module", name);
  EMBER_CHECK(m != nullptr, "register_module", "module \"", name, "\" is null");
  for (const auto& c : children_) {
    EMBER_CHECK(c.first != name, "register_module", "module \"", name, "\" registered twice");
  }
  children_.emplace_back(name, std::move(m));
}

std::shared_ptr<Module> Module::replace_module(const std::string& name, std::shared_ptr<Module> m) {
  EMBER_CHECK(m != nullptr, "replace_module", "module \"", name, "\" replaced by null");
  for (auto& c : children_) {
    if (c.first == name) return std::exchange(c.second, std::move(m));
  }
  EMBER_FAIL("replace_module", "no submodule \"", name, "\" to replace");
}

// --- summary -------------------------------------------------------------------------------------

std::string Module::type_name() const {
  const char* mangled = typeid(*this).name();
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled ? demangled : mangled;
  std::free(demangled);
  // "ember::nn::Linear" -> "Linear", "(anonymous namespace)::Net" -> "Net"; templates keep
  // their arguments.
  const size_t cut = name.find('<');
  const size_t colon = name.rfind("::", cut == std::string::npos ? std::string::npos : cut);
  return colon == std::string::npos ? name : name.substr(colon + 2);
}

namespace {
struct Row {
  std::string name, type, shape, count;
};
}  // namespace

std::string Module::summary() const {
  std::vector<Row> rows;
  // Depth first: a module's row, then its own parameters and buffers, then its children.
  struct Walk {
    static void go(const Module& m, const std::string& name, std::vector<Row>& rows) {
      rows.push_back({name.empty() ? "(root)" : name, m.type_name(), "", ""});
      const std::string pre = name.empty() ? "" : name + ".";
      const Named params = m.named_parameters(), buffers = m.named_buffers();
      // Own entries are the ones without a '.' after the prefix.
      for (const auto& [n, t] : params)
        if (n.find('.') == std::string::npos)
          rows.push_back({pre + n, "param", shape_str(t.shape()), std::to_string(t.numel())});
      for (const auto& [n, t] : buffers)
        if (n.find('.') == std::string::npos)
          rows.push_back({pre + n, "buffer", shape_str(t.shape()), std::to_string(t.numel())});
      for (const auto& [cn, child] : m.named_children()) go(*child, pre + cn, rows);
    }
  };
  Walk::go(*this, "", rows);
  int64_t buffer_elems = 0;
  for (const auto& t : unique_tensors(named_buffers())) buffer_elems += t.numel();
  int64_t params = 0;
  for (const auto& t : unique_tensors(named_parameters())) params += t.numel();

  size_t w[4] = {4, 4, 5, 5};  // "name", "type", "shape", "count"
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.type.size());
    w[2] = std::max(w[2], r.shape.size());
    w[3] = std::max(w[3], r.count.size());
  }
  std::ostringstream os;
  auto line = [&](const std::string& a, const std::string& b, const std::string& c, const std::string& d) {
    std::ostringstream l;
    l << std::left << std::setw(static_cast<int>(w[0])) << a << "  " << std::setw(static_cast<int>(w[1])) << b
      << "  " << std::setw(static_cast<int>(w[2])) << c << "  " << std::right << std::setw(static_cast<int>(w[3]))
      << d;
    std::string text = l.str();
    text.erase(text.find_last_not_of(' ') + 1);  // module rows have no shape or count
    os << text << "\n";
  };
  line("name", "type", "shape", "count");
  os << std::string(w[0] + w[1] + w[2] + w[3] + 6, '-') << "\n";
  for (const Row& r : rows) line(r.name, r.type, r.shape, r.count);
  os << std::string(w[0] + w[1] + w[2] + w[3] + 6, '-') << "\n";
  os << "total parameters: " << params << "\n";
  if (buffer_elems > 0) os << "total buffer elements: " << buffer_elems << "\n";
  return os.str();
}

// --- ModuleList ----------------------------------------------------------------------------------

ModuleList& ModuleList::push_back(std::shared_ptr<Module> m) {
  EMBER_CHECK(m != nullptr, "ModuleList", "cannot add a null module (position ", modules_.size(), ")");
  register_module(std::to_string(modules_.size()), m);
  modules_.push_back(std::move(m));
  return *this;
}

const std::shared_ptr<Module>& ModuleList::operator[](size_t i) const {
  EMBER_CHECK(i < modules_.size(), "ModuleList", "index ", i, " out of range for a list of ", modules_.size());
  return modules_[i];
}

void ModuleList::throw_wrong_type(size_t i) const {
  EMBER_FAIL("ModuleList", "module ", i, " is a ", modules_[i]->type_name(), ", not the requested type");
}

}  // namespace ember::nn
