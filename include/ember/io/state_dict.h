// StateDict lives in ember/core/state_dict.h (modules, optimizers and the readers all stand on
// it); this name stays for existing includes.
#pragma once
#include "ember/core/state_dict.h"
