// The LLVM side of ahead-of-time export: the export target (triple, CPU, features checked
// against LLVM's tables), the artifact's driver emitted as IR next to the plan's kernels (CPU
// check, argument check, one call per kernel over all its work items, status codes), and the
// object's facts (code and weight bytes, undefined symbols) and static archives.
#include "../export_backend.hpp"
#include "../llvm_backend.hpp"
#include "../status_codes.hpp"
#include "../work_items.hpp"
#include "codegen.hpp"

#include <edifice/core/error.hpp>

#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/InlineAsm.h>
#include <llvm/IR/Module.h>
#include <llvm/MC/MCSubtargetInfo.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Object/ArchiveWriter.h>
#include <llvm/Object/ObjectFile.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/TargetParser/Host.h>
#include <llvm/TargetParser/Triple.h>

#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <set>
#include <sstream>

namespace edifice::jit {
namespace {

// Where cpuid reports an x86 feature, and the XCR0 bits (register state the OS saves) it needs.
struct X86Feature {
  const char* name;  // LLVM's name
  std::uint32_t leaf, subleaf;
  int reg;  // 0..3: eax, ebx, ecx, edx
  int bit;
  std::uint64_t xcr0;
};
constexpr std::uint64_t kYmm = 0x6, kZmm = 0xe6, kAmx = 0x60000;
constexpr X86Feature kX86Features[] = {
    {"sse3", 1, 0, 2, 0, 0},
    {"pclmul", 1, 0, 2, 1, 0},
    {"ssse3", 1, 0, 2, 9, 0},
    {"fma", 1, 0, 2, 12, kYmm},
    {"cx16", 1, 0, 2, 13, 0},
    {"sse4.1", 1, 0, 2, 19, 0},
    {"sse4.2", 1, 0, 2, 20, 0},
    {"movbe", 1, 0, 2, 22, 0},
    {"popcnt", 1, 0, 2, 23, 0},
    {"aes", 1, 0, 2, 25, 0},
    {"xsave", 1, 0, 2, 26, 0},
    {"avx", 1, 0, 2, 28, kYmm},
    {"f16c", 1, 0, 2, 29, kYmm},
    {"rdrnd", 1, 0, 2, 30, 0},
    {"sse", 1, 0, 3, 25, 0},
    {"sse2", 1, 0, 3, 26, 0},
    {"bmi", 7, 0, 1, 3, 0},
    {"avx2", 7, 0, 1, 5, kYmm},
    {"bmi2", 7, 0, 1, 8, 0},
    {"avx512f", 7, 0, 1, 16, kZmm},
    {"avx512dq", 7, 0, 1, 17, kZmm},
    {"rdseed", 7, 0, 1, 18, 0},
    {"adx", 7, 0, 1, 19, 0},
    {"avx512ifma", 7, 0, 1, 21, kZmm},
    {"avx512cd", 7, 0, 1, 28, kZmm},
    {"sha", 7, 0, 1, 29, 0},
    {"avx512bw", 7, 0, 1, 30, kZmm},
    {"avx512vl", 7, 0, 1, 31, kZmm},
    {"avx512vbmi", 7, 0, 2, 1, kZmm},
    {"avx512vbmi2", 7, 0, 2, 6, kZmm},
    {"gfni", 7, 0, 2, 8, 0},
    {"vaes", 7, 0, 2, 9, kYmm},
    {"vpclmulqdq", 7, 0, 2, 10, kYmm},
    {"avx512vnni", 7, 0, 2, 11, kZmm},
    {"avx512bitalg", 7, 0, 2, 12, kZmm},
    {"avx512vpopcntdq", 7, 0, 2, 14, kZmm},
    {"amx-bf16", 7, 0, 3, 22, kAmx},
    {"avx512fp16", 7, 0, 3, 23, kZmm},
    {"amx-tile", 7, 0, 3, 24, kAmx},
    {"amx-int8", 7, 0, 3, 25, kAmx},
    {"avxvnni", 7, 1, 0, 4, kYmm},
    {"avx512bf16", 7, 1, 0, 5, kZmm},
    {"amx-fp16", 7, 1, 0, 21, kAmx},
    {"lzcnt", 0x80000001, 0, 2, 5, 0},
    {"sse4a", 0x80000001, 0, 2, 6, 0},
    {"prfchw", 0x80000001, 0, 2, 8, 0},
    {"xop", 0x80000001, 0, 2, 11, kYmm},
    {"fma4", 0x80000001, 0, 2, 16, kYmm},
};

// Where Linux reports an aarch64 feature: getauxval(AT_HWCAP = 16) or (AT_HWCAP2 = 26). Not
// checked: ssbs (a speculation control only system code sets; compiled kernels never use it,
// and qemu-user does not report it).
struct Arm64Feature {
  const char* name;
  int auxv;
  int bit;
};
constexpr Arm64Feature kArm64Features[] = {
    {"fp-armv8", 16, 0}, {"neon", 16, 1},     {"aes", 16, 3},      {"sha2", 16, 6},
    {"crc", 16, 7},      {"lse", 16, 8},      {"fullfp16", 16, 9}, {"rdm", 16, 12},
    {"rcpc", 16, 15},    {"sha3", 16, 17},    {"sm4", 16, 19},     {"dotprod", 16, 20},
    {"sve", 16, 22},     {"fp16fml", 16, 23}, {"sve2", 26, 1},     {"i8mm", 26, 13},
    {"bf16", 26, 14},
};

bool is_x86(const Target& t) {
  return llvm::Triple(t.triple).getArch() == llvm::Triple::x86_64;
}

std::set<std::string> known_features(const llvm::MCSubtargetInfo& sti) {
  std::set<std::string> names;
  for (const auto& kv : sti.getAllProcessorFeatures()) names.insert(kv.Key);
  return names;
}

std::unique_ptr<llvm::MCSubtargetInfo> subtarget(const llvm::Target& target,
                                                 const std::string& triple, const std::string& cpu,
                                                 const std::string& features) {
  std::unique_ptr<llvm::MCSubtargetInfo> sti(target.createMCSubtargetInfo(triple, cpu, features));
  if (!sti) fail("export: LLVM has no subtarget for {} {}", triple, cpu);
  return sti;
}

// Unknown CPUs and features are errors naming what the triple accepts.
void check_cpu_and_features(const llvm::Target& target, const Target& t,
                            const std::string& user_features) {
  // The generic subtarget: an unknown CPU would make LLVM print a warning.
  auto sti = subtarget(target, t.triple, "", "");
  if (!sti->isCPUStringValid(t.cpu)) {
    std::string cpus;
    for (const auto& kv : sti->getAllProcessorDescriptions())
      cpus += (cpus.empty() ? "" : ", ") + std::string(kv.Key);
    fail("export: unknown CPU \"{}\" for {}; LLVM knows: {}", t.cpu, t.triple, cpus);
  }
  const std::set<std::string> known = known_features(*sti);
  std::stringstream list(user_features);
  std::string item;
  while (std::getline(list, item, ',')) {
    if (item.empty()) continue;
    const std::string feature = item.substr(1);
    if ((item[0] != '+' && item[0] != '-') || !known.count(feature))
      fail(
          "export: unknown feature \"{}\" for {} (write +name or -name, e.g. +avx2 or "
          "-avx512f)",
          item, t.triple);
  }
}

Isa isa_of(const llvm::MCSubtargetInfo& sti, bool x86) {
  if (!x86) return Isa::generic;
  if (sti.checkFeatures("+avx512f,+avx512bw,+avx512dq,+avx512vl")) return Isa::avx512;
  if (sti.checkFeatures("+avx2,+fma")) return Isa::avx2;
  if (sti.checkFeatures("+sse4.2")) return Isa::sse42;
  return Isa::generic;
}

}  // namespace

Target resolve_export_target(const ExportTarget& in) {
  const Target& host = host_target();
  if (in.triple.empty() && in.cpu.empty() && in.features.empty()) {
    Target t = host;
    t.jit = false;
    return t;
  }
  const std::string host_triple = llvm::sys::getProcessTriple();
  Target t;
  t.triple = in.triple.empty() ? host_triple : llvm::Triple::normalize(in.triple);
  const llvm::Triple triple(t.triple);
  if (triple.getArch() != llvm::Triple::x86_64 && triple.getArch() != llvm::Triple::aarch64)
    fail(
        "export: unknown or unsupported target triple \"{}\" (supported: x86_64-linux-gnu, "
        "aarch64-linux-gnu)",
        in.triple);
  if (!triple.isOSLinux())
    fail(
        "export: target triple \"{}\" is not a Linux target (the artifact's CPU check and "
        "libraries are Linux's)",
        in.triple);
  initialize_llvm_target(t.triple);
  std::string error;
  const llvm::Target* target = llvm::TargetRegistry::lookupTarget(t.triple, error);
  if (!target) fail("export: no LLVM target for \"{}\": {}", in.triple, error);
  const bool host_arch = triple.getArch() == llvm::Triple(host_triple).getArch();
  // The host CPU and its (checked, capped) features unless a CPU is named.
  const bool host_cpu = in.cpu.empty() && host_arch;
  t.cpu = !in.cpu.empty() ? in.cpu : host_cpu ? host.cpu : "generic";
  t.features = host_cpu ? host.features : "";
  if (!in.features.empty()) t.features += (t.features.empty() ? "" : ",") + in.features;
  check_cpu_and_features(*target, t, in.features);
  auto sti = subtarget(*target, t.triple, t.cpu, t.features);
  t.isa = isa_of(*sti, triple.getArch() == llvm::Triple::x86_64);
  t.vector_bytes = t.isa == Isa::avx512 ? 64 : t.isa == Isa::avx2 ? 32 : 16;
  t.host_cpu = t.cpu;
  t.jit = false;
  return t;
}

std::vector<std::string> checked_cpu_features(const Target& target) {
  auto tm = make_target_machine(target);
  const llvm::MCSubtargetInfo& sti = *tm->getMCSubtargetInfo();
  const std::set<std::string> known = known_features(sti);
  std::vector<std::string> out;
  auto add = [&](const char* name) {
    if (known.count(name) && sti.checkFeatures(std::string("+") + name)) out.push_back(name);
  };
  if (is_x86(target))
    for (const X86Feature& f : kX86Features) add(f.name);
  else
    for (const Arm64Feature& f : kArm64Features) add(f.name);
  return out;
}

namespace {

// The artifact's thread pool, emitted as IR over pthreads: NAME_set_threads(n) sets the
// thread count (default 1: no thread is ever started); a run with n > 1 starts the missing
// workers, holds the pool for the whole run (one multi-threaded run at a time) and splits
// each large kernel's work items into min(n, items) contiguous chunks, as the JIT's pool does.
// Work items never combine results, so outputs do not depend on the split. The mutex and
// condition variables are zero-initialised storage of 64 bytes (glibc's initialisers are all
// zero on x86-64 and aarch64; the types take 40 to 48 bytes there), so no initialisation call
// is needed. Workers live as long as the process (never dlclose an artifact that ran them).
class PoolEmitter {
 public:
  PoolEmitter(llvm::Module& m, const std::string& name, bool x86)
      : m_(m), ctx_(m.getContext()), b_(ctx_), name_(name), x86_(x86) {
    i32_ = b_.getInt32Ty();
    i64_ = b_.getInt64Ty();
    ptr_ = b_.getPtrTy();
    mutex_ = storage("pool_mutex");
    wake_ = storage("pool_wake");
    done_ = storage("pool_done");
    run_mutex_ = storage("pool_run_mutex");
    threads_ = scalar("threads", i32_, 1);
    started_ = scalar("workers", i32_, 0);
    generation_ = scalar("generation", i64_, 0);
    pending_ = scalar("pending", i32_, 0);
    job_status_ = scalar("job_status", i32_, 0);
    job_items_ = scalar("job_items", i64_, 0);
    job_tasks_ = scalar("job_tasks", i64_, 0);
    job_fn_ = scalar("job_fn", ptr_, 0);
    job_table_ = scalar("job_table", ptr_, 0);
    emit_set_threads();
    emit_worker();
    emit_start();
    emit_parallel_for();
  }

  /// The thread count (volatile load), in the current function of `b`.
  llvm::Value* threads(llvm::IRBuilder<>& b) {
    auto* l = b.CreateAlignedLoad(i32_, threads_, llvm::Align(4));
    l->setAtomic(llvm::AtomicOrdering::Monotonic);
    return l;
  }
  llvm::Function* start() const { return start_; }
  llvm::Function* parallel_for() const { return parallel_for_; }
  llvm::Value* run_mutex() const { return run_mutex_; }
  llvm::FunctionCallee unlock() { return callee("pthread_mutex_unlock", {ptr_}); }

 private:
  llvm::GlobalVariable* storage(const std::string& what) {
    auto* type = llvm::ArrayType::get(b_.getInt8Ty(), 64);
    auto* g = new llvm::GlobalVariable(m_, type, false, llvm::GlobalValue::InternalLinkage,
                                       llvm::ConstantAggregateZero::get(type), name_ + "." + what);
    g->setAlignment(llvm::Align(64));
    return g;
  }
  llvm::GlobalVariable* scalar(const std::string& what, llvm::Type* type, std::int64_t value) {
    llvm::Constant* init = type->isPointerTy()
                               ? static_cast<llvm::Constant*>(llvm::ConstantPointerNull::get(ptr_))
                               : llvm::ConstantInt::get(type, static_cast<std::uint64_t>(value));
    return new llvm::GlobalVariable(m_, type, false, llvm::GlobalValue::InternalLinkage, init,
                                    name_ + "." + what);
  }
  llvm::FunctionCallee callee(const char* fn, std::vector<llvm::Type*> params) {
    return m_.getOrInsertFunction(fn, llvm::FunctionType::get(i32_, params, false));
  }
  llvm::Function* internal(const std::string& what, llvm::Type* result,
                           std::vector<llvm::Type*> params) {
    auto* f = llvm::Function::Create(llvm::FunctionType::get(result, params, false),
                                     llvm::Function::InternalLinkage, name_ + "." + what, m_);
    f->addFnAttr(llvm::Attribute::NoUnwind);
    f->addFnAttr(llvm::Attribute::NoInline);
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", f));
    return f;
  }
  llvm::BasicBlock* block(const char* what) {
    return llvm::BasicBlock::Create(ctx_, what, b_.GetInsertBlock()->getParent());
  }
  void lock(llvm::Value* mutex) { b_.CreateCall(callee("pthread_mutex_lock", {ptr_}), {mutex}); }
  void unlock(llvm::Value* mutex) { b_.CreateCall(unlock(), {mutex}); }
  // Shared state is read and written atomically: workers and the caller also poll it outside
  // the mutex while they spin.
  llvm::Value* load(llvm::GlobalVariable* g) {
    llvm::Type* type = g->getValueType();
    auto* l = b_.CreateAlignedLoad(type, g, llvm::Align(m_.getDataLayout().getTypeStoreSize(type)));
    l->setAtomic(llvm::AtomicOrdering::Acquire);
    return l;
  }
  void store(llvm::Value* v, llvm::GlobalVariable* g) {
    auto* s = b_.CreateAlignedStore(
        v, g, llvm::Align(m_.getDataLayout().getTypeStoreSize(g->getValueType())));
    s->setAtomic(llvm::AtomicOrdering::Release);
  }
  // Polls `done()` up to kSpins times with a pause between (kernels follow each other within
  // microseconds, and a condition-variable wake-up costs tens of them on a VM, as in the JIT's
  // pool); the caller then sleeps on a condition variable if still needed.
  void spin_until(const std::function<llvm::Value*()>& done) {
    constexpr int kSpins = 20000;
    // In the entry block: the worker's spins are inside its endless loop.
    llvm::Function* f = b_.GetInsertBlock()->getParent();
    llvm::IRBuilder<> entry(&f->getEntryBlock(), f->getEntryBlock().begin());
    llvm::Value* count = entry.CreateAlloca(i32_);
    b_.CreateStore(b_.getInt32(0), count);
    llvm::BasicBlock* test = block("spin.test");
    llvm::BasicBlock* body = block("spin");
    llvm::BasicBlock* after = block("spin.done");
    b_.CreateBr(test);
    b_.SetInsertPoint(test);
    llvm::Value* n = b_.CreateLoad(i32_, count);
    b_.CreateCondBr(b_.CreateOr(done(), b_.CreateICmpSGE(n, b_.getInt32(kSpins))), after, body);
    b_.SetInsertPoint(body);
    auto* type = llvm::FunctionType::get(b_.getVoidTy(), false);
    b_.CreateCall(type, llvm::InlineAsm::get(type, x86_ ? "pause" : "yield", "~{memory}", true));
    b_.CreateStore(b_.CreateAdd(n, b_.getInt32(1)), count);
    b_.CreateBr(test);
    b_.SetInsertPoint(after);
  }
  // while (condition()) pthread_cond_wait(cond, mutex_), with mutex_ held.
  void wait_while(llvm::Value* cond, const std::function<llvm::Value*()>& condition) {
    llvm::BasicBlock* test = block("wait.test");
    llvm::BasicBlock* body = block("wait");
    llvm::BasicBlock* after = block("wait.done");
    b_.CreateBr(test);
    b_.SetInsertPoint(test);
    b_.CreateCondBr(condition(), body, after);
    b_.SetInsertPoint(body);
    b_.CreateCall(callee("pthread_cond_wait", {ptr_, ptr_}), {cond, mutex_});
    b_.CreateBr(test);
    b_.SetInsertPoint(after);
  }
  // kernel(table, items * index / tasks, items * (index + 1) / tasks, status)
  void run_chunk(llvm::Value* fn, llvm::Value* table, llvm::Value* items, llvm::Value* tasks,
                 llvm::Value* index, llvm::Value* status) {
    llvm::Value* begin = b_.CreateSDiv(b_.CreateMul(items, index), tasks);
    llvm::Value* end =
        b_.CreateSDiv(b_.CreateMul(items, b_.CreateAdd(index, b_.getInt64(1))), tasks);
    auto* type = llvm::FunctionType::get(b_.getVoidTy(), {ptr_, i64_, i64_, ptr_}, false);
    b_.CreateCall(type, fn, {table, begin, end, status});
  }

  // void NAME_set_threads(int n): n < 1 means 1.
  void emit_set_threads() {
    auto* f = llvm::Function::Create(llvm::FunctionType::get(b_.getVoidTy(), {i32_}, false),
                                     llvm::Function::ExternalLinkage, name_ + "_set_threads", m_);
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", f));
    llvm::Value* n = f->getArg(0);
    store(b_.CreateSelect(b_.CreateICmpSLT(n, b_.getInt32(1)), b_.getInt32(1), n), threads_);
    b_.CreateRetVoid();
  }

  // Worker k (argument: k | generation at its start << 20): runs chunk k of every job.
  void emit_worker() {
    worker_ = internal("worker", ptr_, {ptr_});
    llvm::Value* arg = b_.CreatePtrToInt(worker_->getArg(0), i64_);
    llvm::Value* index = b_.CreateAnd(arg, b_.getInt64((1 << 20) - 1));
    llvm::Value* seen = b_.CreateAlloca(i64_);
    llvm::Value* status = b_.CreateAlloca(i32_);
    b_.CreateStore(b_.CreateLShr(arg, 20), seen);
    llvm::BasicBlock* loop = block("loop");
    b_.CreateBr(loop);
    b_.SetInsertPoint(loop);
    spin_until([&] { return b_.CreateICmpNE(load(generation_), b_.CreateLoad(i64_, seen)); });
    lock(mutex_);
    wait_while(wake_,
               [&] { return b_.CreateICmpEQ(load(generation_), b_.CreateLoad(i64_, seen)); });
    b_.CreateStore(load(generation_), seen);
    llvm::Value* fn = load(job_fn_);
    llvm::Value* table = load(job_table_);
    llvm::Value* items = load(job_items_);
    llvm::Value* tasks = load(job_tasks_);
    unlock(mutex_);
    b_.CreateStore(b_.getInt32(0), status);
    llvm::BasicBlock* work = block("work");
    llvm::BasicBlock* report = block("report");
    b_.CreateCondBr(b_.CreateICmpSLT(index, tasks), work, report);
    b_.SetInsertPoint(work);
    run_chunk(fn, table, items, tasks, index, status);
    b_.CreateBr(report);
    b_.SetInsertPoint(report);
    lock(mutex_);
    llvm::Value* code = b_.CreateLoad(i32_, status);
    llvm::Value* old = load(job_status_);
    store(b_.CreateSelect(b_.CreateICmpNE(code, b_.getInt32(0)), code, old), job_status_);
    llvm::Value* left = b_.CreateSub(load(pending_), b_.getInt32(1));
    store(left, pending_);
    llvm::BasicBlock* signal = block("signal");
    llvm::BasicBlock* next = block("next");
    b_.CreateCondBr(b_.CreateICmpEQ(left, b_.getInt32(0)), signal, next);
    b_.SetInsertPoint(signal);
    b_.CreateCall(callee("pthread_cond_signal", {ptr_}), {done_});
    b_.CreateBr(next);
    b_.SetInsertPoint(next);
    unlock(mutex_);
    b_.CreateBr(loop);
  }

  // start(threads): takes the run mutex and starts workers 1 .. threads-1 not yet running.
  void emit_start() {
    start_ = internal("start", b_.getVoidTy(), {i32_});
    lock(run_mutex_);
    llvm::Value* wanted = b_.CreateSub(start_->getArg(0), b_.getInt32(1));
    llvm::Value* tid = b_.CreateAlloca(i64_);
    llvm::BasicBlock* test = block("spawn.test");
    llvm::BasicBlock* spawn = block("spawn");
    llvm::BasicBlock* done = block("spawn.done");
    b_.CreateBr(test);
    b_.SetInsertPoint(test);
    llvm::Value* have = load(started_);
    b_.CreateCondBr(b_.CreateICmpSLT(have, wanted), spawn, done);
    b_.SetInsertPoint(spawn);
    llvm::Value* k = b_.CreateZExt(b_.CreateAdd(have, b_.getInt32(1)), i64_);
    llvm::Value* arg = b_.CreateOr(k, b_.CreateShl(load(generation_), 20));
    llvm::Value* rc = b_.CreateCall(
        callee("pthread_create", {ptr_, ptr_, ptr_, ptr_}),
        {tid, llvm::ConstantPointerNull::get(ptr_), worker_, b_.CreateIntToPtr(arg, ptr_)});
    // A worker that cannot be started is not counted: jobs are split over the running ones.
    llvm::BasicBlock* ok = block("spawn.ok");
    b_.CreateCondBr(b_.CreateICmpEQ(rc, b_.getInt32(0)), ok, done);
    b_.SetInsertPoint(ok);
    lock(mutex_);
    store(b_.CreateAdd(have, b_.getInt32(1)), started_);
    unlock(mutex_);
    b_.CreateBr(test);
    b_.SetInsertPoint(done);
    b_.CreateRetVoid();
  }

  // parallel_for(kernel, table, items, threads, status): chunk 0 here, the others on workers.
  void emit_parallel_for() {
    parallel_for_ = internal("parallel_for", b_.getVoidTy(), {ptr_, ptr_, i64_, i32_, ptr_});
    llvm::Function* f = parallel_for_;
    llvm::Value* items = f->getArg(2);
    // Chunks: min(threads, workers + 1, items).
    llvm::Value* team = b_.CreateAdd(load(started_), b_.getInt32(1));
    llvm::Value* n = b_.CreateSExt(
        b_.CreateSelect(b_.CreateICmpSLT(f->getArg(3), team), f->getArg(3), team), i64_);
    llvm::Value* tasks = b_.CreateSelect(b_.CreateICmpSLT(items, n), items, n);
    lock(mutex_);
    store(f->getArg(0), job_fn_);
    store(f->getArg(1), job_table_);
    store(items, job_items_);
    store(tasks, job_tasks_);
    store(b_.getInt32(0), job_status_);
    store(load(started_), pending_);
    store(b_.CreateAdd(load(generation_), b_.getInt64(1)), generation_);
    b_.CreateCall(callee("pthread_cond_broadcast", {ptr_}), {wake_});
    unlock(mutex_);
    run_chunk(f->getArg(0), f->getArg(1), items, tasks, b_.getInt64(0), f->getArg(4));
    spin_until([&] { return b_.CreateICmpEQ(load(pending_), b_.getInt32(0)); });
    lock(mutex_);
    wait_while(done_, [&] { return b_.CreateICmpNE(load(pending_), b_.getInt32(0)); });
    llvm::Value* code = load(job_status_);
    unlock(mutex_);
    llvm::BasicBlock* set = block("set");
    llvm::BasicBlock* out = block("out");
    b_.CreateCondBr(b_.CreateICmpNE(code, b_.getInt32(0)), set, out);
    b_.SetInsertPoint(set);
    b_.CreateStore(code, f->getArg(4));
    b_.CreateBr(out);
    b_.SetInsertPoint(out);
    b_.CreateRetVoid();
  }

  llvm::Module& m_;
  llvm::LLVMContext& ctx_;
  llvm::IRBuilder<> b_;
  std::string name_;
  bool x86_;
  llvm::Type *i32_ = nullptr, *i64_ = nullptr;
  llvm::PointerType* ptr_ = nullptr;
  llvm::GlobalVariable *mutex_, *wake_, *done_, *run_mutex_, *threads_, *started_, *generation_,
      *pending_, *job_status_, *job_items_, *job_tasks_, *job_fn_, *job_table_;
  llvm::Function *worker_ = nullptr, *start_ = nullptr, *parallel_for_ = nullptr;
};

// Emits the driver: NAME_check_cpu, NAME_error_message and NAME_run (or NAME_run_params).
class DriverEmitter {
 public:
  DriverEmitter(llvm::Module& m, const Plan& plan, const ArtifactInterface& api,
                const Target& target, const std::vector<std::string>& features)
      : m_(m),
        ctx_(m.getContext()),
        b_(ctx_),
        plan_(plan),
        api_(api),
        target_(target),
        features_(features) {
    i32_ = b_.getInt32Ty();
    i64_ = b_.getInt64Ty();
    ptr_ = b_.getPtrTy();
  }

  void emit() {
    for (const Kernel& k : plan_.kernels)
      m_.getFunction(k.name)->setVisibility(llvm::GlobalValue::HiddenVisibility);
    state_ = global_i32(api_.name + ".cpu_state", 0);
    missing_ = global_i32(api_.name + ".missing_feature", -1);
    emit_check_cpu();
    emit_error_message();
    if (std::any_of(plan_.kernels.begin(), plan_.kernels.end(), splittable))
      pool_ = std::make_unique<PoolEmitter>(m_, api_.name, is_x86(target_));
    else
      emit_ignored_set_threads();
    emit_run();
  }

 private:
  llvm::GlobalVariable* global_i32(const std::string& name, int value) {
    return new llvm::GlobalVariable(m_, i32_, false, llvm::GlobalValue::InternalLinkage,
                                    b_.getInt32(value), name);
  }

  llvm::Constant* string(const std::string& s) {
    auto* init = llvm::ConstantDataArray::getString(ctx_, s);
    auto* g = new llvm::GlobalVariable(m_, init->getType(), true, llvm::GlobalValue::PrivateLinkage,
                                       init, ".str");
    g->setUnnamedAddr(llvm::GlobalValue::UnnamedAddr::Global);
    return g;
  }

  llvm::Function* function(const std::string& name, llvm::Type* result,
                           std::vector<llvm::Type*> params) {
    auto* f = llvm::Function::Create(llvm::FunctionType::get(result, params, false),
                                     llvm::Function::ExternalLinkage, name, m_);
    f->addFnAttr(llvm::Attribute::NoUnwind);
    return f;
  }

  llvm::BasicBlock* block(const char* name) {
    return llvm::BasicBlock::Create(ctx_, name, b_.GetInsertBlock()->getParent());
  }

  // Branches to a new block returning `code` when `bad`, else continues in a new block.
  void return_if(llvm::Value* bad, llvm::Value* code) {
    llvm::BasicBlock* fail = block("fail");
    llvm::BasicBlock* next = block("next");
    b_.CreateCondBr(bad, fail, next);
    b_.SetInsertPoint(fail);
    b_.CreateRet(code);
    b_.SetInsertPoint(next);
  }

  // NAME_set_threads when no kernel is worth splitting: the artifact stays single-threaded.
  void emit_ignored_set_threads() {
    llvm::Function* f = function(api_.name + "_set_threads", b_.getVoidTy(), {i32_});
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", f));
    b_.CreateRetVoid();
  }

  // ---- the CPU check
  std::array<llvm::Value*, 4> cpuid(std::uint32_t leaf, std::uint32_t subleaf) {
    auto* result = llvm::StructType::get(ctx_, {i32_, i32_, i32_, i32_});
    auto* type = llvm::FunctionType::get(result, {i32_, i32_}, false);
    auto* code = llvm::InlineAsm::get(
        type, "cpuid", "={ax},={bx},={cx},={dx},{ax},{cx},~{dirflag},~{fpsr},~{flags}", true);
    llvm::Value* r = b_.CreateCall(type, code, {b_.getInt32(leaf), b_.getInt32(subleaf)});
    return {b_.CreateExtractValue(r, 0), b_.CreateExtractValue(r, 1), b_.CreateExtractValue(r, 2),
            b_.CreateExtractValue(r, 3)};
  }

  // The feature bits as (value, bit, xcr0 mask) per checked feature, x86.
  std::vector<llvm::Value*> x86_present() {
    llvm::Value* max_basic = cpuid(0, 0)[0];
    llvm::Value* max_extended = cpuid(0x80000000u, 0)[0];
    std::map<std::pair<std::uint32_t, std::uint32_t>, std::array<llvm::Value*, 4>> leaves;
    auto leaf = [&](std::uint32_t l, std::uint32_t sub) {
      auto key = std::make_pair(l, sub);
      if (!leaves.count(key)) {
        // A leaf above the CPU's maximum reads as zero (cpuid would return another leaf).
        llvm::Value* valid =
            b_.CreateICmpUGE(l >= 0x80000000u ? max_extended : max_basic, b_.getInt32(l));
        auto regs = cpuid(l, sub);
        for (auto& r : regs) r = b_.CreateSelect(valid, r, b_.getInt32(0));
        leaves[key] = regs;
      }
      return leaves[key];
    };
    // XCR0 only when the OS has enabled xgetbv (OSXSAVE), else the instruction faults.
    llvm::Value* osxsave =
        b_.CreateICmpNE(b_.CreateAnd(leaf(1, 0)[2], b_.getInt32(1u << 27)), b_.getInt32(0));
    llvm::BasicBlock* before = b_.GetInsertBlock();
    llvm::BasicBlock* read = block("xgetbv");
    llvm::BasicBlock* join = block("xcr0");
    b_.CreateCondBr(osxsave, read, join);
    b_.SetInsertPoint(read);
    auto* pair = llvm::StructType::get(ctx_, {i32_, i32_});
    auto* type = llvm::FunctionType::get(pair, {i32_}, false);
    auto* code =
        llvm::InlineAsm::get(type, "xgetbv", "={ax},={dx},{cx},~{dirflag},~{fpsr},~{flags}", true);
    llvm::Value* r = b_.CreateCall(type, code, {b_.getInt32(0)});
    llvm::Value* lo = b_.CreateZExt(b_.CreateExtractValue(r, 0), i64_);
    llvm::Value* hi = b_.CreateZExt(b_.CreateExtractValue(r, 1), i64_);
    llvm::Value* read_xcr0 = b_.CreateOr(lo, b_.CreateShl(hi, 32));
    b_.CreateBr(join);
    b_.SetInsertPoint(join);
    llvm::PHINode* xcr0 = b_.CreatePHI(i64_, 2);
    xcr0->addIncoming(b_.getInt64(0), before);
    xcr0->addIncoming(read_xcr0, read);
    std::vector<llvm::Value*> present;
    for (const std::string& name : features_)
      for (const X86Feature& f : kX86Features) {
        if (name != f.name) continue;
        llvm::Value* reg = leaf(f.leaf, f.subleaf)[f.reg];
        llvm::Value* has =
            b_.CreateICmpNE(b_.CreateAnd(reg, b_.getInt32(1u << f.bit)), b_.getInt32(0));
        if (f.xcr0) {
          llvm::Value* mask = b_.getInt64(f.xcr0);
          has = b_.CreateAnd(has, b_.CreateICmpEQ(b_.CreateAnd(xcr0, mask), mask));
        }
        present.push_back(has);
      }
    return present;
  }

  std::vector<llvm::Value*> arm64_present() {
    auto getauxval = m_.getOrInsertFunction("getauxval", i64_, i64_);
    std::map<int, llvm::Value*> words;
    std::vector<llvm::Value*> present;
    for (const std::string& name : features_)
      for (const Arm64Feature& f : kArm64Features) {
        if (name != f.name) continue;
        if (!words.count(f.auxv)) words[f.auxv] = b_.CreateCall(getauxval, {b_.getInt64(f.auxv)});
        present.push_back(b_.CreateICmpNE(
            b_.CreateAnd(words[f.auxv], b_.getInt64(std::int64_t{1} << f.bit)), b_.getInt64(0)));
      }
    return present;
  }

  // int NAME_check_cpu(void): 0 when the CPU has every checked feature, else 1 (remembering
  // the first missing one for the message). Checked once; later calls read the answer.
  void emit_check_cpu() {
    check_cpu_ = function(api_.name + "_check_cpu", i32_, {});
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", check_cpu_));
    auto* state = b_.CreateAlignedLoad(i32_, state_, llvm::Align(4));
    state->setAtomic(llvm::AtomicOrdering::Monotonic);
    return_if(b_.CreateICmpEQ(state, b_.getInt32(1)), b_.getInt32(kArtifactOk));
    return_if(b_.CreateICmpEQ(state, b_.getInt32(2)), b_.getInt32(kArtifactCpuUnsupported));
    std::vector<llvm::Value*> present = is_x86(target_) ? x86_present() : arm64_present();
    auto set_state = [&](int value) {
      b_.CreateAlignedStore(b_.getInt32(value), state_, llvm::Align(4))
          ->setAtomic(llvm::AtomicOrdering::Monotonic);
    };
    for (std::size_t i = 0; i < present.size(); ++i) {
      llvm::BasicBlock* lacks = block("lacks");
      llvm::BasicBlock* next = block("has");
      b_.CreateCondBr(present[i], next, lacks);
      b_.SetInsertPoint(lacks);
      b_.CreateAlignedStore(b_.getInt32(static_cast<int>(i)), missing_, llvm::Align(4));
      set_state(2);
      b_.CreateRet(b_.getInt32(kArtifactCpuUnsupported));
      b_.SetInsertPoint(next);
    }
    set_state(1);
    b_.CreateRet(b_.getInt32(kArtifactOk));
  }

  // const char* NAME_error_message(int code)
  void emit_error_message() {
    llvm::Function* f = function(api_.name + "_error_message", ptr_, {i32_});
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", f));
    llvm::Value* code = f->getArg(0);
    std::string checked;
    for (const auto& name : features_) checked += (checked.empty() ? "" : ",") + name;
    const std::string built =
        fmt::format("edifice artifact {} was built for {} (cpu {}; checks {})", api_.name,
                    target_.triple, target_.cpu, checked.empty() ? "nothing" : checked);
    std::vector<llvm::Constant*> lacks;
    for (const auto& name : features_)
      lacks.push_back(string(fmt::format("{}; this CPU lacks {}", built, name)));
    lacks.push_back(string(built + "; this CPU lacks one of them"));
    auto* table_type = llvm::ArrayType::get(ptr_, lacks.size());
    auto* table = new llvm::GlobalVariable(m_, table_type, true, llvm::GlobalValue::PrivateLinkage,
                                           llvm::ConstantArray::get(table_type, lacks), ".lacks");
    llvm::Value* missing = b_.CreateAlignedLoad(i32_, missing_, llvm::Align(4));
    llvm::Value* index = b_.CreateSelect(b_.CreateICmpSLT(missing, b_.getInt32(0)),
                                         b_.getInt32(static_cast<int>(features_.size())), missing);
    llvm::Value* cpu_message = b_.CreateLoad(
        ptr_, b_.CreateGEP(table_type, table, {b_.getInt64(0), b_.CreateZExt(index, i64_)}));
    return_if(b_.CreateICmpEQ(code, b_.getInt32(kArtifactCpuUnsupported)), cpu_message);
    const std::pair<int, std::string> messages[] = {
        {kArtifactOk, "ok"},
        {kArtifactBadPointer,
         fmt::format("{}: an input, output, parameter or the workspace pointer is NULL or not "
                     "64-byte aligned (allocate with aligned_alloc(64, ...))",
                     api_.name)},
        {kArtifactDivisionByZero, fmt::format("{}: integer division by zero", api_.name)},
        {kArtifactIndexOutOfRange,
         fmt::format("{}: index out of range (an index input of take or scatter_add)", api_.name)},
    };
    for (const auto& [value, text] : messages)
      return_if(b_.CreateICmpEQ(code, b_.getInt32(value)), string(text));
    b_.CreateRet(string(fmt::format("{}: unknown error code", api_.name)));
  }

  // ---- the run function
  llvm::Constant* baked(const Tensor& value) {
    auto it = baked_.find(value.raw_data());
    if (it != baked_.end()) return it->second;
    const auto* bytes = static_cast<const char*>(value.raw_data());
    const std::size_t size = static_cast<std::size_t>(value.nbytes());
    std::string data(bytes, bytes + size);
    if (data.empty()) data.push_back(0);
    auto* init = llvm::ConstantDataArray::getRaw(data, data.size(), b_.getInt8Ty());
    auto* g = new llvm::GlobalVariable(m_, init->getType(), true, llvm::GlobalValue::PrivateLinkage,
                                       init, ".weight");
    g->setAlignment(llvm::Align(64));
    g->setSection(kWeightSection);
    return baked_[value.raw_data()] = g;
  }

  llvm::Value* pointer(const BufferSlot& s, const Value* v) {
    switch (s.place) {
      case BufferSlot::Place::input: {
        const ArtifactInput& in = api_.graph_inputs.at(static_cast<std::size_t>(s.index));
        if (in.source == ArtifactInput::Source::baked) return baked(*in.value);
        return in.source == ArtifactInput::Source::param ? params_.at(in.index)
                                                         : inputs_.at(in.index);
      }
      case BufferSlot::Place::output:
        return outputs_.at(static_cast<std::size_t>(s.index));
      case BufferSlot::Place::arena:
        return b_.CreateInBoundsGEP(b_.getInt8Ty(), workspace_, b_.getInt64(s.offset));
      case BufferSlot::Place::constant:
        return baked(v->node().attrs().get_tensor("value"));
    }
    return nullptr;
  }

  // Loads the pointers of an argument array; `bad` accumulates NULL or misaligned ones.
  std::vector<llvm::Value*> load_pointers(llvm::Value* array, int count, llvm::Value*& bad) {
    std::vector<llvm::Value*> out;
    for (int i = 0; i < count; ++i) {
      llvm::Value* p = b_.CreateLoad(ptr_, b_.CreateConstGEP1_64(ptr_, array, i));
      bad = b_.CreateOr(bad, misaligned(p));
      out.push_back(p);
    }
    return out;
  }

  llvm::Value* misaligned(llvm::Value* p) {
    llvm::Value* address = b_.CreatePtrToInt(p, i64_);
    return b_.CreateOr(b_.CreateICmpEQ(address, b_.getInt64(0)),
                       b_.CreateICmpNE(b_.CreateAnd(address, b_.getInt64(63)), b_.getInt64(0)));
  }

  void emit_run() {
    std::vector<llvm::Type*> params(api_.runtime_params ? 4 : 3, ptr_);
    llvm::Function* run =
        function(api_.name + (api_.runtime_params ? "_run_params" : "_run"), i32_, params);
    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", run));
    llvm::Value* cpu = b_.CreateCall(check_cpu_);
    return_if(b_.CreateICmpNE(cpu, b_.getInt32(0)), cpu);
    unsigned arg = 0;
    llvm::Value* bad = b_.getFalse();
    if (api_.runtime_params) params_ = load_pointers(run->getArg(arg++), api_.num_params, bad);
    inputs_ = load_pointers(run->getArg(arg++), api_.num_inputs, bad);
    outputs_ =
        load_pointers(run->getArg(arg++), static_cast<int>(plan_.graph.outputs().size()), bad);
    workspace_ = run->getArg(arg);
    if (plan_.arena_bytes > 0) bad = b_.CreateOr(bad, misaligned(workspace_));
    return_if(bad, b_.getInt32(kArtifactBadPointer));

    // With more than one thread set: take the pool (started workers) for the whole run.
    threads_ = pool_ ? pool_->threads(b_) : b_.getInt32(1);
    parallel_ = b_.CreateICmpSGT(threads_, b_.getInt32(1));
    if (pool_) {
      llvm::BasicBlock* start = block("pool.start");
      llvm::BasicBlock* body = block("body");
      b_.CreateCondBr(parallel_, start, body);
      b_.SetInsertPoint(start);
      b_.CreateCall(pool_->start(), {threads_});
      b_.CreateBr(body);
      b_.SetInsertPoint(body);
    }
    std::size_t most = 1;
    for (const Kernel& k : plan_.kernels)
      most = std::max(most, k.outputs.size() + k.inputs.size() + 1);
    auto* table_type = llvm::ArrayType::get(ptr_, most);
    llvm::Value* table = b_.CreateAlloca(table_type);
    llvm::Value* status = b_.CreateAlloca(i32_);
    llvm::BasicBlock* steps = b_.GetInsertBlock();
    exit_ = block("exit");
    b_.SetInsertPoint(exit_);
    exit_code_ = b_.CreatePHI(i32_, 2);
    if (pool_) {
      llvm::BasicBlock* release = block("pool.release");
      llvm::BasicBlock* done = block("done");
      b_.CreateCondBr(parallel_, release, done);
      b_.SetInsertPoint(release);
      b_.CreateCall(pool_->unlock(), {pool_->run_mutex()});
      b_.CreateBr(done);
      b_.SetInsertPoint(done);
    }
    b_.CreateRet(exit_code_);
    b_.SetInsertPoint(steps);
    for (std::size_t ki = 0; ki < plan_.kernels.size(); ++ki) emit_step(ki, table, status);
    emit_output_copies();
    exit_code_->addIncoming(b_.getInt32(kArtifactOk), b_.GetInsertBlock());
    b_.CreateBr(exit_);
  }

  // Whether a kernel is worth splitting over threads (the JIT's rule, for any thread count).
  static bool splittable(const Kernel& k) { return choose_tasks(k, work_items(k), 2) > 1; }

  // One kernel over all its work items: one call, or chunks over the pool when threads are set
  // (results never depend on the split).
  void emit_step(std::size_t ki, llvm::Value* table, llvm::Value* status) {
    const Kernel& k = plan_.kernels[ki];
    const std::int64_t items = work_items(k);
    if (items == 0) return;
    int slot = 0;
    auto put = [&](llvm::Value* p) {
      b_.CreateStore(p, b_.CreateConstGEP1_64(ptr_, table, slot++));
    };
    for (const Value& v : k.outputs) put(pointer(plan_.slot(v), &v));
    for (const Value& v : k.inputs) put(pointer(plan_.slot(v), &v));
    if (k.workspace_bytes > 0)
      put(pointer({BufferSlot::Place::arena, -1, plan_.workspace_offsets[ki], k.workspace_bytes},
                  nullptr));
    b_.CreateStore(b_.getInt32(0), status);
    llvm::Function* fn = m_.getFunction(k.name);
    llvm::BasicBlock* join = block("joined");
    llvm::BasicBlock* single = block("single");
    if (pool_ && splittable(k)) {
      llvm::BasicBlock* split = block("split");
      b_.CreateCondBr(parallel_, split, single);
      b_.SetInsertPoint(split);
      b_.CreateCall(pool_->parallel_for(), {fn, table, b_.getInt64(items), threads_, status});
      b_.CreateBr(join);
    } else {
      b_.CreateBr(single);
    }
    b_.SetInsertPoint(single);
    llvm::CallInst* call = b_.CreateCall(fn, {table, b_.getInt64(0), b_.getInt64(items), status});
    // The kernel stays the JIT's function, not specialised into the driver.
    call->addFnAttr(llvm::Attribute::NoInline);
    b_.CreateBr(join);
    b_.SetInsertPoint(join);
    llvm::Value* code = b_.CreateLoad(i32_, status);
    llvm::Value* mapped = b_.CreateSelect(
        b_.CreateICmpEQ(code, b_.getInt32(kIntegerDivisionByZero)),
        b_.getInt32(kArtifactDivisionByZero), b_.getInt32(kArtifactIndexOutOfRange));
    llvm::BasicBlock* next = block("next");
    exit_code_->addIncoming(mapped, b_.GetInsertBlock());
    b_.CreateCondBr(b_.CreateICmpNE(code, b_.getInt32(0)), exit_, next);
    b_.SetInsertPoint(next);
  }

  // Outputs no kernel writes (a graph input, a constant, a repeated output) are copies.
  void emit_output_copies() {
    const auto& outs = plan_.graph.outputs();
    for (std::size_t i = 0; i < outs.size(); ++i) {
      const BufferSlot& s = plan_.slot(outs[i]);
      if (s.place == BufferSlot::Place::output && s.index == static_cast<int>(i)) continue;
      const std::int64_t bytes =
          shape_numel(outs[i].shape()) * static_cast<std::int64_t>(dtype_size(outs[i].dtype()));
      if (bytes == 0) continue;
      b_.CreateMemCpy(outputs_[i], llvm::Align(64), pointer(s, &outs[i]), llvm::Align(64),
                      b_.getInt64(bytes));
    }
  }

  llvm::Module& m_;
  llvm::LLVMContext& ctx_;
  llvm::IRBuilder<> b_;
  const Plan& plan_;
  const ArtifactInterface& api_;
  const Target& target_;
  const std::vector<std::string>& features_;
  llvm::Type *i32_ = nullptr, *i64_ = nullptr;
  llvm::PointerType* ptr_ = nullptr;
  llvm::GlobalVariable *state_ = nullptr, *missing_ = nullptr;
  llvm::Function* check_cpu_ = nullptr;
  std::vector<llvm::Value*> inputs_, outputs_, params_;
  llvm::Value* workspace_ = nullptr;
  std::map<const void*, llvm::Constant*> baked_;
  std::unique_ptr<PoolEmitter> pool_;
  llvm::Value *threads_ = nullptr, *parallel_ = nullptr;
  llvm::BasicBlock* exit_ = nullptr;
  llvm::PHINode* exit_code_ = nullptr;
};

}  // namespace

std::string compile_artifact(const Plan& plan, const ArtifactInterface& interface,
                             const Target& target) {
  const std::vector<std::string> features = checked_cpu_features(target);
  std::vector<std::string> objects = compile_plan(
      plan, target, interface.name, 1,
      [&](llvm::Module& m) { DriverEmitter(m, plan, interface, target, features).emit(); });
  return objects.at(0);
}

ObjectFacts inspect_object(const std::string& object) {
  auto file =
      llvm::object::ObjectFile::createObjectFile(llvm::MemoryBufferRef(object, "artifact.o"));
  if (!file) fail("export: cannot read the object back: {}", to_string(file.takeError()));
  ObjectFacts facts;
  for (const auto& section : (*file)->sections()) {
    auto name = section.getName();
    if (name && *name == kWeightSection)
      facts.weight_bytes += static_cast<std::int64_t>(section.getSize());
    else if (section.isText())
      facts.code_bytes += static_cast<std::int64_t>(section.getSize());
  }
  for (const auto& symbol : (*file)->symbols()) {
    auto flags = symbol.getFlags();
    auto name = symbol.getName();
    if (flags && name && (*flags & llvm::object::SymbolRef::SF_Undefined) && !name->empty())
      facts.undefined_symbols.push_back(name->str());
  }
  return facts;
}

void write_archive(const std::string& path, const std::string& object, const std::string& member) {
  std::vector<llvm::NewArchiveMember> members;
  members.emplace_back(llvm::MemoryBufferRef(object, member));
  if (auto error = llvm::writeArchive(path, members, llvm::SymtabWritingMode::NormalSymtab,
                                      llvm::object::Archive::K_GNU, /*Deterministic=*/true,
                                      /*Thin=*/false))
    fail("export: cannot write {}: {}", path, to_string(std::move(error)));
}

}  // namespace edifice::jit
