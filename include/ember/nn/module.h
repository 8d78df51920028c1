// Modules: named parameters and submodules, train/eval mode.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ember/core/device.h"
#include "ember/core/tensor.h"

namespace ember::nn {

class Module {
 public:
  virtual ~Module() = default;
  // Parameters of this module and, recursively, its submodules ("fc1.weight", ...).
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t parameter_count() const;
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();  // drops every parameter's .grad

  // Moves every parameter (this module's and, recursively, its submodules') to `device`, in
  // place, and returns *this. "In place" means the parameter's TensorImpl stays the same
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

 protected:
  // Registers t (marked requires_grad) under name and returns it.
  Tensor register_parameter(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace ember::nn
