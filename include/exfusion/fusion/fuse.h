// After training: collapse every multi-expert FFN into one dense FFN (W = Σ m_i E_i with
// the final m). The result is the dense baseline architecture, with the same parameter
// names, counts and FLOPs, and the same eval outputs as the trained model.
#pragma once
#include "exfusion/models/vit.h"

namespace exfusion {

VisionTransformer fuse(const VisionTransformer& trained);

}  // namespace exfusion
