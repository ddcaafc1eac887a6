// Storage of the op registry (compiled into each extension module separately).
#include "registry.h"

namespace percept_fast {

std::vector<OpEntry>& op_registry() {
  static std::vector<OpEntry> ops;
  return ops;
}

}  // namespace percept_fast
