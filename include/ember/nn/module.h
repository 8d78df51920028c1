// Modules: named parameters, buffers and submodules, train/eval mode, state dicts.
//
// Names are dotted paths in registration order: a module's own parameters, then each child's
// with "child." in front, depth first ("fc1.weight", "body.2.0.bias"). Parameters are trained
// (requires_grad); buffers are state that is saved and moved with the module but not trained
// (running statistics, masks, step counters).
//
// state_dict() is every parameter, then every buffer, under those names: the same names
// PyTorch's `module.state_dict()` uses for the same tree, so a .safetensors file written by
// io::save_safetensors(path, model.state_dict()) loads with `safetensors.torch.load_file`
// into a PyTorch model of the same structure, and back (docs/checkpoints.md).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/core/device.h"
#include "ember/core/dtype.h"
#include "ember/core/tensor.h"
#include "ember/core/state_dict.h"

namespace ember::nn {

class Module {
 public:
  virtual ~Module() = default;
  // Parameters of this module and, recursively, its submodules ("fc1.weight", ...).
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t parameter_count() const;
  // Buffers of this module and, recursively, its submodules ("bn.running_mean", ...).
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<Tensor> buffers() const;
  // The direct submodules, in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  // Puts m in place of the direct submodule `name` (same name and position) and returns the old
  // one: state_dict, parameters, to() and Sequential's forward see m from then on (a typed
  // handle a parent keeps in a member does not follow). Throws ember::Error if there is no such
  // child or m is null. Used by nn::quantize_dynamic (ember/nn/quantized.h).
  std::shared_ptr<Module> replace_module(const std::string& name, std::shared_ptr<Module> m);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();  // drops every parameter's .grad

  // Every parameter, then every buffer, by dotted name. The tensors are detached handles on
  // the module's own memory (no copy, as PyTorch): write or clone them before the next
  // optimizer step. A tensor shared by two submodules appears under both names.
  StateDict state_dict() const;
  // Copies sd's tensors into the parameters and buffers of the same names, in place (every
  // handle to a parameter sees the new values; an optimizer built on them stays valid), with
  // the dtype converted to the parameter's and the parameter's device kept. Meta is ignored.
  // Checks everything before changing anything and throws one ember::Error that names every
  // problem: a mis-shaped tensor (both shapes) always; with `strict`, also every missing name
  // (in the module, not in sd) and every unexpected one (in sd, not in the module). Without
  // `strict` the names both have are loaded and the rest is left as it is.
  void load_state_dict(const StateDict& sd, bool strict = true);
  // The problems load_state_dict(sd, strict) would raise, one line each (empty: it would load).
  std::vector<std::string> check_state_dict(const StateDict& sd, bool strict = true) const;

  // Moves every parameter and buffer (this module's and, recursively, its submodules') to
  // `device`, in place, and returns *this. "In place" means the parameter's TensorImpl stays the same
  // object: its storage, strides and offset are replaced by those of the moved copy, so every
  // handle to a parameter (a layer's `weight`, a Tensor you kept from parameters()) sees the
  // new device. requires_grad is kept; the gradients of moved parameters are dropped (a
  // gradient on the old device would not match). Parameters already on `device` are left as
  // they are, gradients included; a parameter shared by two submodules moves once.
  // All copies are made before any parameter changes, so a failing move (no GPU, out of
  // memory) throws ember::Error and leaves the module untouched.
  // Move the model before building its optimizer: optimizer state (SGD momentum buffers)
  // lives on the device the parameters had when the state was created.
  Module& to(Device device);
  // Converts every floating-point parameter and buffer to `dtype` (a floating dtype), in place
  // the same way as to(Device): same TensorImpl, new storage and dtype, gradients of converted
  // tensors dropped. Integer and bool buffers keep their dtype. Returns *this.
  // Views do not follow either move: a view taken before (weight.select(0, 0), a narrow, a
  // reshape that did not copy, a Tensor from detach()) is a TensorImpl of its own over the old
  // storage, so after to() it keeps the old device, dtype and values and no longer aliases the
  // parameter (writes to it do not reach the weight, nor the other way round). Take views
  // after the last to(); handles to the parameter itself are fine.
  Module& to(DType dtype);

  // The name summary() prints for this module. The default is the class name without its
  // namespace ("Linear", "Sequential", "Net"); override it to print something else.
  virtual std::string type_name() const;
  // A table with one row per module and per parameter/buffer: dotted name, type (module class,
  // "param" or "buffer"), shape and element count, then the total parameter count (and the
  // buffer count when there are buffers).
  std::string summary() const;

 protected:
  // Registers t (marked requires_grad) under name and returns it.
  Tensor register_parameter(const std::string& name, Tensor t);
  // Registers t as a buffer (saved, loaded and moved with the module; requires_grad off).
  Tensor register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  // Swaps the memory of `tensors` (deduplicated) for convert(t) where that is defined.
  template <class F>
  void convert_in_place(const std::vector<Tensor>& tensors, F convert);

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A list of submodules registered as "0", "1", ... (the PyTorch names), for models that build
// a variable number of blocks. It has no forward: the owner iterates it.
class ModuleList : public Module {
 public:
  ModuleList() = default;
  ModuleList& push_back(std::shared_ptr<Module> m);
  size_t size() const { return modules_.size(); }
  bool empty() const { return modules_.empty(); }
  // Checked: throws ember::Error for i >= size().
  const std::shared_ptr<Module>& operator[](size_t i) const;
  // The module at i as an M (throws ember::Error when it is not one).
  template <class M>
  std::shared_ptr<M> get(size_t i) const {
    auto m = std::dynamic_pointer_cast<M>((*this)[i]);
    if (!m) throw_wrong_type(i);
    return m;
  }
  std::vector<std::shared_ptr<Module>>::const_iterator begin() const { return modules_.begin(); }
  std::vector<std::shared_ptr<Module>>::const_iterator end() const { return modules_.end(); }

 private:
  [[noreturn]] void throw_wrong_type(size_t i) const;
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace ember::nn
