// ORC LLJIT and the new pass manager, in the spirit of LLVM's OrcV2 examples: one process-wide
// LLJIT, objects compiled by us (so they can be cached on disk) and linked per graph under
// their own ResourceTracker so that dropping a compiled graph frees its code.
#include "llvm_backend.hpp"

#include <edifice/core/error.hpp>

#include <llvm/Analysis/TargetLibraryInfo.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/TargetParser/Host.h>
#include <llvm/TargetParser/Triple.h>
#include <llvm/Transforms/Utils/Cloning.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>

namespace edifice::jit {

std::string to_string(llvm::Error error) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << error;
  return os.str();
}

namespace {

void initialize_llvm() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    llvm::InitializeNativeTargetAsmParser();
  });
}

}  // namespace

void initialize_llvm_target(const std::string& triple) {
  initialize_llvm();
  if (llvm::Triple(triple).getArch() != llvm::Triple::aarch64 ||
      llvm::Triple(llvm::sys::getProcessTriple()).getArch() == llvm::Triple::aarch64)
    return;
  // Cross-compiling for aarch64 (ahead-of-time export): registered on first use only.
  static std::once_flag once;
  std::call_once(once, [] {
    LLVMInitializeAArch64TargetInfo();
    LLVMInitializeAArch64Target();
    LLVMInitializeAArch64TargetMC();
    LLVMInitializeAArch64AsmPrinter();
    LLVMInitializeAArch64AsmParser();  // the artifact's thread pool uses inline asm (yield)
  });
}

std::unique_ptr<llvm::TargetMachine> make_target_machine(const Target& target) {
  initialize_llvm_target(target.triple);
  std::string error;
  const llvm::Target* t = llvm::TargetRegistry::lookupTarget(target.triple, error);
  if (!t) fail("jit: no LLVM target for {}: {}", target.triple, error);
  llvm::TargetOptions options;
  // Kernels are written for IEEE semantics; contraction into FMA is allowed per instruction.
  options.AllowFPOpFusion = llvm::FPOpFusion::Standard;
  std::unique_ptr<llvm::TargetMachine> tm(
      t->createTargetMachine(target.triple, target.cpu, target.features, options, llvm::Reloc::PIC_,
                             std::nullopt, llvm::CodeGenOptLevel::Aggressive, /*JIT=*/target.jit));
  if (!tm) fail("jit: LLVM could not create a target machine for {} {}", target.triple, target.cpu);
  return tm;
}

namespace {

std::string print_module(const llvm::Module& m) {
  std::string s;
  llvm::raw_string_ostream os(s);
  m.print(os, nullptr);
  return os.str();
}

class Jit {
 public:
  // Never destroyed: executables held in static caches unlink their code at exit, after
  // other statics are gone, and need the session alive then.
  static Jit& instance() {
    static Jit* jit = new Jit;
    return *jit;
  }
  llvm::orc::LLJIT& lljit() { return *jit_; }

 private:
  Jit() {
    initialize_llvm();
    auto jit = llvm::orc::LLJITBuilder().create();
    if (!jit) fail("jit: cannot create LLJIT: {}", to_string(jit.takeError()));
    jit_ = std::move(*jit);
    // Kernels call libm (sin, cos, pow); resolve them from the process.
    auto generator = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
        jit_->getDataLayout().getGlobalPrefix());
    if (!generator) fail("jit: cannot search the process for symbols");
    jit_->getMainJITDylib().addGenerator(std::move(*generator));
  }
  std::unique_ptr<llvm::orc::LLJIT> jit_;
};

class OrcObject final : public LoadedObject {
 public:
  OrcObject(llvm::orc::ResourceTrackerSP tracker, llvm::orc::JITDylib* dylib)
      : tracker_(std::move(tracker)), dylib_(dylib) {}
  ~OrcObject() override {
    std::lock_guard lock(mutex());
    if (auto error = tracker_->remove()) llvm::consumeError(std::move(error));
  }
  void* symbol(const std::string& name) const override {
    std::lock_guard lock(mutex());
    auto address = Jit::instance().lljit().lookup(*dylib_, name);
    if (!address) fail("jit: symbol {} not found: {}", name, to_string(address.takeError()));
    return address->toPtr<void*>();
  }
  static std::mutex& mutex() {
    static auto* m = new std::mutex;
    return *m;
  }

 private:
  llvm::orc::ResourceTrackerSP tracker_;
  llvm::orc::JITDylib* dylib_;
};

}  // namespace

const DumpOptions& DumpOptions::from_environment() {
  static const DumpOptions options = [] {
    DumpOptions d;
    const char* env = std::getenv("EDIFICE_DUMP");
    std::string list = env ? env : "";
    auto has = [&](const std::string& item) {
      if (list == "all") return true;
      std::stringstream ss(list);
      std::string part;
      while (std::getline(ss, part, ','))
        if (part == item) return true;
      return false;
    };
    d.graph = has("graph");
    d.plan = has("plan");
    d.ir = has("ir");
    d.opt_ir = has("opt-ir");
    d.assembly = has("asm");
    d.timing = has("timing");
    const char* dir = std::getenv("EDIFICE_DUMP_DIR");
    d.dir = dir ? dir : "";
    return d;
  }();
  return options;
}

void DumpOptions::write(const std::string& name, const std::string& text) const {
  if (dir.empty()) {
    std::fprintf(stderr, "==== edifice dump: %s\n%s\n", name.c_str(), text.c_str());
    return;
  }
  std::ofstream out(dir + "/" + name);
  out << text;
}

std::string optimize_to_object(llvm::Module& module, const Target& target,
                               const std::string& dump_prefix) {
  const DumpOptions& dump = DumpOptions::from_environment();
  auto tm = make_target_machine(target);
  module.setDataLayout(tm->createDataLayout());
  module.setTargetTriple(target.triple);
  if (dump.ir) dump.write(dump_prefix + ".ll", print_module(module));
  {
    std::string errors;
    llvm::raw_string_ostream os(errors);
    if (llvm::verifyModule(module, &os))
      fail("jit: internal error: generated invalid LLVM IR for {}:\n{}", dump_prefix, os.str());
  }

  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::Triple triple(target.triple);
  llvm::TargetLibraryInfoImpl tlii(triple);
  fam.registerPass([&] { return llvm::TargetLibraryAnalysis(tlii); });
  llvm::PipelineTuningOptions tuning;
  tuning.LoopVectorization = true;
  tuning.SLPVectorization = true;
  llvm::PassBuilder builder(tm.get(), tuning);
  builder.registerModuleAnalyses(mam);
  builder.registerCGSCCAnalyses(cgam);
  builder.registerFunctionAnalyses(fam);
  builder.registerLoopAnalyses(lam);
  builder.crossRegisterProxies(lam, fam, cgam, mam);
  builder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3).run(module, mam);
  if (dump.opt_ir) dump.write(dump_prefix + ".opt.ll", print_module(module));

  auto emit = [&](llvm::CodeGenFileType type) {
    llvm::SmallVector<char, 0> buffer;
    llvm::raw_svector_ostream os(buffer);
    llvm::legacy::PassManager pm;
    pm.add(new llvm::TargetLibraryInfoWrapperPass(tlii));
    if (tm->addPassesToEmitFile(pm, os, nullptr, type))
      fail("jit: the target cannot emit this file type");
    pm.run(module);
    return std::string(buffer.begin(), buffer.end());
  };
  if (dump.assembly) {
    // Code generation rewrites the IR it runs on, so assembly is printed from a copy.
    auto copy = llvm::CloneModule(module);
    auto asm_tm = make_target_machine(target);
    llvm::SmallVector<char, 0> buffer;
    llvm::raw_svector_ostream os(buffer);
    llvm::legacy::PassManager pm;
    pm.add(new llvm::TargetLibraryInfoWrapperPass(tlii));
    asm_tm->addPassesToEmitFile(pm, os, nullptr, llvm::CodeGenFileType::AssemblyFile);
    pm.run(*copy);
    dump.write(dump_prefix + ".s", std::string(buffer.begin(), buffer.end()));
  }
  return emit(llvm::CodeGenFileType::ObjectFile);
}

std::shared_ptr<LoadedObject> load_objects(const std::vector<std::string>& objects,
                                           const std::string& debug_name) {
  std::lock_guard lock(OrcObject::mutex());
  Jit& jit = Jit::instance();
  // Each object gets its own dylib so that symbol names may repeat across graphs.
  static std::uint64_t counter = 0;
  auto dylib = jit.lljit().createJITDylib(fmt::format("{}#{}", debug_name, counter++));
  if (!dylib) fail("jit: cannot create a JITDylib: {}", to_string(dylib.takeError()));
  dylib->addToLinkOrder(jit.lljit().getMainJITDylib());
  auto tracker = dylib->createResourceTracker();
  for (const std::string& object : objects) {
    auto buffer = llvm::MemoryBuffer::getMemBufferCopy(object, debug_name);
    if (auto error = jit.lljit().addObjectFile(tracker, std::move(buffer)))
      fail("jit: cannot link the object for {}: {}", debug_name, to_string(std::move(error)));
  }
  return std::make_shared<OrcObject>(tracker, &*dylib);
}

}  // namespace edifice::jit
