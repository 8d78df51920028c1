// What DDP uses below the public collectives.
#pragma once
#include "ember/dist.h"

namespace ember::dist::detail {
// all_reduce without the cross-rank shape check (DDP checked its buckets' layout once, when it
// was built); `name` names the collective in errors.
Work all_reduce_unchecked(Tensor& t, ReduceOp op, const char* name);
}  // namespace ember::dist::detail
