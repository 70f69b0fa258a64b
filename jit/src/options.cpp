// Options resolved against the environment (EDIFICE_PRUNE, EDIFICE_ABSORB, EDIFICE_THREADS).
#include "program.hpp"

#include <cstdlib>
#include <string>
#include <thread>

namespace edifice::jit {

bool resolve_prune_rows(const Options& options) {
  const char* env = std::getenv("EDIFICE_PRUNE");
  return options.prune_rows && !(env && std::string(env) == "0");
}

bool resolve_absorb_projections(const Options& options) {
  const char* env = std::getenv("EDIFICE_ABSORB");
  return options.absorb_projections && !(env && std::string(env) == "0");
}

bool prune_rows_enabled(const Options& options) {
  return resolve_prune_rows(options);
}

int resolve_threads(const Options& options) {
  if (options.threads > 0) return options.threads;
  if (const char* t = std::getenv("EDIFICE_THREADS"); t && std::atoi(t) > 0) return std::atoi(t);
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace edifice::jit
