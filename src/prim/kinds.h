// Kinds of primitives that both backends implement (their math, where it is elementwise,
// lives in elementwise_math.h).
#pragma once
#include <cstdint>

namespace ember {

enum class ReduceOp : uint8_t { sum, prod, max, min };

}  // namespace ember
