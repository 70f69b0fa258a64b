#pragma once
// The LLVM end of the JIT, kept behind this small interface so that LLVM's heavy headers are
// compiled in few translation units: optimise a module for the target and emit an object,
// then link objects into the process with ORC LLJIT and look up symbols.

#include <edifice/jit/target.hpp>

#include <memory>
#include <string>
#include <vector>

namespace llvm {
class Error;
class Module;
class TargetMachine;
}  // namespace llvm

namespace edifice::jit {

/// What to dump while compiling (from EDIFICE_DUMP, a comma list of: graph, plan, ir, opt-ir,
/// asm, timing; or "all"). Dumps go to the directory EDIFICE_DUMP_DIR, else to stderr.
struct DumpOptions {
  bool graph = false, plan = false, ir = false, opt_ir = false, assembly = false, timing = false;
  std::string dir;
  static const DumpOptions& from_environment();
  /// Writes `text` to "<dir>/<name>" or to stderr under a header line.
  void write(const std::string& name, const std::string& text) const;
};

/// The message of an LLVM error (consumed).
std::string to_string(llvm::Error error);

/// Registers the LLVM target of `triple` (the host's at start-up; aarch64 on first use).
void initialize_llvm_target(const std::string& triple);

/// A target machine for `target` (O3, PIC; the large code model when target.jit on x86-64).
std::unique_ptr<llvm::TargetMachine> make_target_machine(const Target& target);

/// Runs the O3 pipeline x
std::string optimize_to_object(llvm::Module& module, const Target& target,
                               const std::string& dump_prefix);

/// Code linked into the process. Unlinked when the last reference goes away.
class LoadedObject {
 public:
  virtual ~LoadedObject() = default;
  /// Address of a symbol defined by the object; throws edifice::Error if missing.
  virtual void* symbol(const std::string& name) const = 0;
};

/// Links objects produced by optimize_to_object (possibly read back from the disk cache) into
/// one symbol namespace.
std::shared_ptr<LoadedObject> load_objects(const std::vector<std::string>& objects,
                                           const std::string& debug_name);

}  // namespace edifice::jit
