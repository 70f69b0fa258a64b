#pragma once
/// \file
/// Build a model by architecture name from string key/value options, like
/// Edifice.build(:attention, opts), so a config file or a command line can choose it:
///
///   auto built = models::build("attention", {{"embed_dim", "64"}, {"num_heads", "4"}});
///
/// Values are parsed by the option's type (integers, reals, booleans, comma-separated integer
/// lists). As in Edifice, any of embed_dim, input_size, input_dim and obs_size sets the input
/// width. Unknown architectures and unknown or malformed options are errors that list what is
/// accepted.

#include <edifice/models/multi_head.hpp>

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace edifice::models {

using Config = std::map<std::string, std::string>;

/// Architecture names, sorted: "attention" (build: sliding window, hidden_size override),
/// "attention_hybrid", "attention_hybrid_mlp", "attention_sliding_window".
std::vector<std::string> list_architectures();

multi_head::Built build(std::string_view architecture, const Config& config);

}  // namespace edifice::models
