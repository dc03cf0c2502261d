#pragma once
// The layouts ckptd knows, one object each, defined in layout_<name>.cpp.
// all_layouts() (layouts.cpp) lists them; tests may name one directly.

#include "layout.hpp"

namespace ckptd::watcher {

// Hugging Face Trainer (and TRL, llama-stack's huggingface provider):
// "checkpoint-<global_step>" folders, complete once trainer_state.json names
// their step.
const layout& hf_trainer_layout();

// llama-stack's inline torchtune provider: "<model>-sft-<epoch>" and
// "<model>-dpo-<epoch>" folders, settling once their weights are whole.
const layout& llama_stack_torchtune_layout();

// ckptd's own manifest (manifest_file), written last into any folder.
const layout& manifest_layout();

// Specificities, highest wins (see choose_layout in layouts.cpp). Spaced out
// so that a future layout can slot in between.
inline constexpr int manifest_specificity = 100;
inline constexpr int hf_trainer_specificity = 30;
inline constexpr int llama_stack_torchtune_specificity = 20;

}  // namespace ckptd::watcher
