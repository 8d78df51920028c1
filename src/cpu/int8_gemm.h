// The CPU int8 GEMM's instruction-set paths (src/cpu/int8_gemm.cpp). The best one the CPU has
// is chosen once at start-up; tests and benchmarks may force a lower one to check or time it.
#pragma once

namespace ember::cpu {

enum class Int8Isa { scalar, avx2, avx512_vnni };
const char* int8_isa_name(Int8Isa isa);
// The best path this CPU (and this build's compiler) supports.
Int8Isa int8_best_isa();
// The path int8_gemm runs now (the best one unless forced lower).
Int8Isa int8_isa();
// Forces `isa` (clamped to the best supported); not thread-safe against running GEMMs.
void set_int8_isa(Int8Isa isa);

}  // namespace ember::cpu
