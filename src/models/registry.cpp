// The built-in FFN kinds and models, one line each (see registry.h).
#include "exfusion/models/registry.h"

#include "exfusion/fusion/ders_ffn.h"
#include "exfusion/fusion/ewa_ffn.h"
#include "exfusion/fusion/exfusion_ffn.h"
#include "exfusion/fusion/moe.h"
#include "exfusion/layers/mlp.h"
#include "exfusion/models/llama.h"
#include "exfusion/models/llama_formats.h"
#include "exfusion/models/pvt.h"
#include "exfusion/models/pvt_formats.h"
#include "exfusion/models/pvt_v2.h"
#include "exfusion/models/pvt_v2_formats.h"
#include "exfusion/models/swin.h"
#include "exfusion/models/swin_formats.h"
#include "exfusion/models/t5.h"
#include "exfusion/models/t5_formats.h"
#include "exfusion/models/vit.h"
#include "exfusion/models/vit_formats.h"

namespace exfusion {

FfnRegistry& ffn_kinds() {
  static FfnRegistry registry = [] {
    FfnRegistry kinds;
    kinds.add<DenseFfnOptions>("dense", "the plain FFN, fc2(GELU(fc1 x))");
    kinds.add<ExFusionOptions>("exfusion", "N experts per set, fused by fusion weights");
    kinds.add<MoeOptions>("moe", "top-k mixture of experts with capacity (MoE-N-k)");
    kinds.add<DersMoeOptions>("ders-moe", "top-k MoE over DeRS experts: shared base + deltas");
    kinds.add<DersExFusionOptions>("ders-exfusion",
                                   "ExFusion over DeRS experts: shared base + deltas, fused");
    kinds.add<EwaOptions>("ewa",
                          "N experts over a random uniform partition of the tokens, averaged "
                          "after every step (Experts Weights Averaging)");
    return kinds;
  }();
  return registry;
}

ModelRegistry& model_kinds() {
  static ModelRegistry registry = [] {
    ModelRegistry models;
    models.add<VisionTransformerOptions>("vit", "Vision Transformer / DeiT with timm's names");
    models.add<T5Options>("t5", "T5 v1.1 encoder-decoder with Hugging Face's names");
    models.add<SwinOptions>("swin", "Swin Transformer (v1) with timm's names");
    models.add<PvtOptions>("pvt_v1", "PVT v1 (the paper's PVT-T/S/M/L) with its authors' names");
    models.add<PvtV2Options>("pvt_v2", "PVT v2 (b0-b5) with timm's names");
    models.add<LlamaOptions>("llama", "Llama decoder language model with Hugging Face's names");
    return models;
  }();
  return registry;
}

ImportFormatRegistry& import_formats() {
  static ImportFormatRegistry registry = [] {
    ImportFormatRegistry formats;
    formats.add("timm", "vit", "timm's VisionTransformer state_dict",
                std::make_shared<TimmVitFormat>());
    formats.add("huggingface", "vit", "Hugging Face's ViTForImageClassification",
                std::make_shared<HuggingFaceVitFormat>());
    formats.add("huggingface", "t5", "Hugging Face's T5ForConditionalGeneration (T5 v1.1)",
                std::make_shared<HuggingFaceT5Format>());
    formats.add("timm", "swin", "timm's SwinTransformer state_dict",
                std::make_shared<TimmSwinFormat>());
    formats.add("huggingface", "llama", "Hugging Face's LlamaForCausalLM",
                std::make_shared<HuggingFaceLlamaFormat>());
    formats.add("timm", "pvt_v2", "timm's PyramidVisionTransformerV2 state_dict",
                std::make_shared<TimmPvtV2Format>());
    return formats;
  }();
  return registry;
}

ExportFormatRegistry& export_formats() {
  static ExportFormatRegistry registry = [] {
    ExportFormatRegistry formats;
    formats.add("timm", "vit", "timm's VisionTransformer names, model.json with timm's kwargs",
                std::make_shared<TimmVitExport>());
    formats.add("huggingface", "t5",
                "a T5ForConditionalGeneration directory (hf/: config.json, spiece.model)",
                std::make_shared<HuggingFaceT5Export>());
    formats.add("timm", "swin", "timm's SwinTransformer names, model.json with timm's kwargs",
                std::make_shared<TimmSwinExport>());
    formats.add("huggingface", "llama",
                "a LlamaForCausalLM directory (hf/: config.json, tokenizer.model)",
                std::make_shared<HuggingFaceLlamaExport>());
    formats.add("timm", "pvt_v2",
                "timm's PyramidVisionTransformerV2 names, model.json with timm's kwargs",
                std::make_shared<TimmPvtV2Export>());
    formats.add("pvt", "pvt_v1",
                "the PVT authors' names (classification/pvt.py), model.json with their kwargs",
                std::make_shared<PvtAuthorsExport>());
    return formats;
  }();
  return registry;
}

}  // namespace exfusion

namespace exfusion {

MixtureExportRegistry& mixture_export_formats() {
  static MixtureExportRegistry registry = [] {
    MixtureExportRegistry formats;
    formats.add("mixtral", "llama",
                "a MixtralForCausalLM directory (hf/: config.json, tokenizer.model) in the Hub's "
                "layout",
                std::make_shared<HuggingFaceMixtralExport>());
    return formats;
  }();
  return registry;
}

}  // namespace exfusion
