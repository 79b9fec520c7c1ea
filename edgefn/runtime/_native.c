/* edgefn.runtime._native: a core guest's Store, instantiation, calls and linear memory in C.
 *
 * The same steps fastcall.py made through ctypes (~20 foreign calls per invocation, each ~1 us of
 * argument boxing plus a GIL hand-off) as a handful of calls into this module. Nothing is linked
 * against libwasmtime: init() receives the addresses of the C-API functions from the library
 * wasmtime-py has already loaded, so this module and wasmtime-py always use the same engine.
 *
 * The structs below mirror wasmtime's C API (wasmtime 50, the layouts wasmtime-py's _bindings.py
 * declares); init() checks their sizes against the ones Python passes, so a layout change fails at
 * start rather than corrupting memory.
 *
 * Linear memory: every memory of a core Store is charged to that Store's budget (memory.py says why);
 * the budget lives in the Store's handle, so it outlives every memory the Store frees.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <sys/statvfs.h>

typedef struct { uint64_t store_id; size_t private_; } wt_instance_t;
typedef struct { uint64_t store_id; void *private_; } wt_func_t;
typedef struct { uint8_t kind; union { wt_func_t func; unsigned char bytes[24]; } of; } wt_extern_t;
typedef struct { uint8_t kind; union { int32_t i32; int64_t i64; unsigned char bytes[24]; } of; } wt_val_t;

typedef void *(*store_new_fn)(void *engine, void *data, void (*finalizer)(void *));
typedef void *(*store_context_fn)(void *store);
typedef void (*store_delete_fn)(void *store);
typedef void (*store_limiter_fn)(void *store, int64_t memory_size, int64_t table_elements, int64_t instances, int64_t tables, int64_t memories);
typedef void *(*set_fuel_fn)(void *ctx, uint64_t fuel);
typedef void *(*get_fuel_fn)(void *ctx, uint64_t *fuel);
typedef void (*set_epoch_deadline_fn)(void *ctx, uint64_t ticks);
typedef void *(*pre_instantiate_fn)(void *pre, void *ctx, wt_instance_t *out, void **trap);
typedef int (*export_nth_fn)(void *ctx, const wt_instance_t *inst, size_t index, char **name, size_t *name_len, wt_extern_t *item);
typedef void *(*func_call_fn)(void *ctx, const wt_func_t *func, const wt_val_t *args, size_t nargs, wt_val_t *results, size_t nresults, void **trap);
typedef uint8_t *(*memory_data_fn)(void *ctx, const void *memory);
typedef size_t (*memory_data_size_fn)(void *ctx, const void *memory);
typedef void *(*error_new_fn)(const char *message);
typedef union { int32_t i32; int64_t i64; unsigned char bytes[16]; } wt_val_raw_t;
typedef void *(*unchecked_callback_fn)(void *env, void *caller, wt_val_raw_t *args_and_results, size_t count);
typedef int (*caller_export_get_fn)(void *caller, const char *name, size_t name_len, wt_extern_t *item);
typedef void *(*caller_context_fn)(void *caller);

typedef void *(*get_memory_cb)(void *env, size_t *size, size_t *maximum);
typedef void *(*grow_memory_cb)(void *env, size_t new_size);
typedef struct { void *env; get_memory_cb get_memory; grow_memory_cb grow_memory; void (*finalizer)(void *); } wt_linear_memory_t;
typedef void *(*new_memory_cb)(void *env, const void *ty, size_t minimum, size_t maximum, size_t reserved, size_t guard, wt_linear_memory_t *out);
typedef struct { void *env; new_memory_cb new_memory; void (*finalizer)(void *); } wt_memory_creator_t;
typedef void (*memory_creator_set_fn)(void *config, wt_memory_creator_t *creator);

static struct {
    store_new_fn store_new;
    store_context_fn store_context;
    store_delete_fn store_delete;
    store_limiter_fn store_limiter;
    set_fuel_fn set_fuel;
    get_fuel_fn get_fuel;
    set_epoch_deadline_fn set_epoch_deadline;
    pre_instantiate_fn pre_instantiate;
    export_nth_fn export_nth;
    func_call_fn func_call;
    memory_data_fn memory_data;
    memory_data_size_fn memory_data_size;
    error_new_fn error_new;
    memory_creator_set_fn memory_creator_set;
    caller_export_get_fn caller_export_get;
    caller_context_fn caller_context;
} api;
static int api_ready = 0;

#define KIND_I32 0
#define KIND_I64 1
#define EXTERN_MEMORY 3 /* WASMTIME_EXTERN_MEMORY */
#define DYNAMIC_RESERVATION ((size_t)4 << 30) /* what a memory without a static reservation may grow to in place */

/* --- the budget every memory of one Store is charged to ---------------------------------------------- */

typedef struct {
    size_t cap, used, peak;
    size_t refused_asked, refused_cap; /* the first creation or growth refused; refused_cap == 0: none */
} budget_t;

static budget_t unlimited = { (size_t)1 << 62, 0, 0, 0, 0 };
static __thread budget_t *charging = NULL; /* set around instantiation: the Store new memories belong to */

static int charge(budget_t *b, size_t delta) {
    if (b == &unlimited) return 1; /* memories made outside a Store's instantiation: nothing to count */
    if (b->used + delta > b->cap) {
        if (b->refused_cap == 0) {
            b->refused_asked = b->used + delta;
            b->refused_cap = b->cap;
        }
        return 0;
    }
    b->used += delta;
    if (b->used > b->peak) b->peak = b->used;
    return 1;
}

typedef struct {
    uint8_t *base;
    size_t mapped;  /* bytes reserved (PROT_NONE beyond size) */
    size_t size;    /* accessible bytes */
    size_t maximum;
    budget_t *budget;
} region_t;

static size_t page_size = 4096;
static size_t round_up(size_t n) { return (n + page_size - 1) / page_size * page_size; }

static void *error(const char *fmt, ...) {
    char message[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return api.error_new(message);
}

static void *get_memory(void *env, size_t *size, size_t *maximum) {
    region_t *r = env;
    *size = r->size;
    *maximum = r->maximum;
    return r->base;
}

static void *grow_memory(void *env, size_t new_size) {
    region_t *r = env;
    if (new_size <= r->size) return NULL;
    if (new_size > r->maximum) return error("a memory cannot grow past %zu bytes", r->maximum);
    if (!charge(r->budget, new_size - r->size))
        return error("memory_mb: growing to %zu bytes would pass the budget of %zu bytes", new_size, r->budget->cap);
    size_t start = round_up(r->size), end = round_up(new_size);
    if (end > start && mprotect(r->base + start, end - start, PROT_READ | PROT_WRITE) != 0) {
        if (r->budget != &unlimited) r->budget->used -= new_size - r->size;
        return error("mprotect failed: %s", strerror(errno));
    }
    r->size = new_size;
    return NULL;
}

/* Freed regions wait here for the next memory of the same reservation: a fresh Store per request would
 * otherwise map, fault in and unmap a multi-GiB reservation every time (a third of a small invocation's
 * CPU went to the kernel). A spare keeps its accessible prefix (`accessible` bytes read-write, the rest
 * PROT_NONE) reading as zero, so to the next guest it is a new mapping; reusing it at the same size takes
 * no system call. */
#define SPARE_REGIONS 32

/* A small guest touches a few pages of its memory. Zeroing those in place (mincore says which) keeps them
 * resident, where discarding them (MADV_DONTNEED) costs the next guest a page fault per page: ~1 µs each
 * in a VM. Past this many touched pages, or a prefix too large to scan, the pages are discarded. */
#define KEEP_RESIDENT_PAGES 64
#define SCAN_PAGES 4096

/* every page of the accessible prefix reads as zero again: 0 on failure */
static int zero_pages(uint8_t *base, size_t accessible) {
    size_t pages = accessible / page_size;
    unsigned char resident[SCAN_PAGES];
    if (pages == 0) return 1;
    if (pages > SCAN_PAGES || mincore(base, accessible, resident) != 0) return madvise(base, accessible, MADV_DONTNEED) == 0;
    size_t touched = 0;
    for (size_t i = 0; i < pages; i++) touched += resident[i] & 1;
    if (touched > KEEP_RESIDENT_PAGES) return madvise(base, accessible, MADV_DONTNEED) == 0;
    for (size_t i = 0; i < pages; i++)
        if (resident[i] & 1) {
            size_t run = i;
            while (run + 1 < pages && (resident[run + 1] & 1)) run++;
            memset(base + i * page_size, 0, (run - i + 1) * page_size);
            i = run;
        }
    return 1;
}

typedef struct { uint8_t *base; size_t mapped, accessible; } spare_t;

static spare_t spares[SPARE_REGIONS];
static pthread_mutex_t spares_lock = PTHREAD_MUTEX_INITIALIZER;

/* 1 if the region was kept (zeroed) for reuse, 0 if the caller must unmap it */
static int keep_spare(uint8_t *base, size_t mapped, size_t size) {
    size_t accessible = round_up(size);
    if (!zero_pages(base, accessible)) return 0;
    int kept = 0;
    pthread_mutex_lock(&spares_lock);
    for (int i = 0; i < SPARE_REGIONS && !kept; i++)
        if (spares[i].base == NULL) {
            spares[i] = (spare_t){ base, mapped, accessible };
            kept = 1;
        }
    pthread_mutex_unlock(&spares_lock);
    return kept;
}

/* a spare region of exactly `mapped` bytes with an accessible, zero prefix of `accessible` bytes, or NULL */
static uint8_t *take_spare(size_t mapped, size_t accessible) {
    spare_t found = { NULL, 0, 0 };
    pthread_mutex_lock(&spares_lock);
    for (int i = 0; i < SPARE_REGIONS; i++)
        if (spares[i].base != NULL && spares[i].mapped == mapped) {
            found = spares[i];
            spares[i].base = NULL;
            break;
        }
    pthread_mutex_unlock(&spares_lock);
    if (found.base == NULL) return NULL;
    size_t want = round_up(accessible);
    int ok = want > found.accessible ? mprotect(found.base + found.accessible, want - found.accessible, PROT_READ | PROT_WRITE) == 0
           : want < found.accessible ? mprotect(found.base + want, found.accessible - want, PROT_NONE) == 0 : 1;
    if (!ok) {
        munmap(found.base, found.mapped);
        return NULL;
    }
    return found.base;
}

static void free_memory(void *env) {
    region_t *r = env;
    if (!keep_spare(r->base, r->mapped, r->size)) munmap(r->base, r->mapped);
    if (r->budget != &unlimited) r->budget->used -= r->size;
    PyMem_RawFree(r);
}

static void *new_memory(void *env, const void *ty, size_t minimum, size_t maximum, size_t reserved, size_t guard, wt_linear_memory_t *out) {
    (void)env;
    (void)ty;
    budget_t *b = charging ? charging : &unlimited;
    if (!charge(b, minimum)) return error("memory_mb: a new memory of %zu bytes would pass the budget of %zu bytes", minimum, b->cap);
    size_t reservation = reserved ? reserved : (maximum > minimum ? maximum : minimum);
    if (!reserved && reservation > DYNAMIC_RESERVATION) reservation = DYNAMIC_RESERVATION;
    size_t mapped = round_up((reservation > minimum ? reservation : minimum) + guard);
    region_t *r = PyMem_RawMalloc(sizeof(region_t));
    if (r == NULL) {
        if (b != &unlimited) b->used -= minimum;
        return error("out of host memory for a region of %zu bytes", mapped);
    }
    void *base = take_spare(mapped, minimum);
    if (base == NULL) {
        base = mmap(NULL, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) {
            PyMem_RawFree(r);
            if (b != &unlimited) b->used -= minimum;
            return error("mmap of %zu bytes failed: %s", mapped, strerror(errno));
        }
        if (minimum && mprotect(base, round_up(minimum), PROT_READ | PROT_WRITE) != 0) {
            munmap(base, mapped);
            PyMem_RawFree(r);
            if (b != &unlimited) b->used -= minimum;
            return error("mprotect failed: %s", strerror(errno));
        }
    }
    size_t limit = reservation > minimum ? reservation : minimum;
    r->base = base;
    r->mapped = mapped;
    r->size = minimum;
    r->maximum = maximum < limit ? maximum : limit;
    r->budget = b;
    out->env = r;
    out->get_memory = get_memory;
    out->grow_memory = grow_memory;
    out->finalizer = free_memory;
    return NULL;
}

static void no_finalizer(void *env) { (void)env; }

/* --- a Store and its one instance -------------------------------------------------------------------- */

typedef struct {
    void *store;
    void *ctx;
    budget_t budget;
    wt_instance_t instance;
    wt_extern_t memory, alloc, handle, init;
    int has_init;
    wt_val_t args[2];
    wt_val_t result;
    PyObject *env; /* bytes: the function's env as pack_env() laid it out, or NULL */
} core_store_t;

/* the Store whose wasm this thread is running (set around every call into it): what a host call reads */
static __thread core_store_t *running = NULL;

static core_store_t *store_of(PyObject *handle) {
    core_store_t *s = PyLong_AsVoidPtr(handle);
    if (s == NULL && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a deleted or null Store handle");
    return s;
}

/* (0 or an error pointer, 0 or a trap pointer): what Python turns into GuestCallError */
static PyObject *failure(void *err, void *trap) {
    return Py_BuildValue("(iKK)", 1, (unsigned long long)(uintptr_t)err, (unsigned long long)(uintptr_t)trap);
}

#define NEED_ARGS(n, what) do { if (nargs != (n)) { PyErr_SetString(PyExc_TypeError, what); return NULL; } } while (0)
#define NEED_API() do { if (!api_ready) { PyErr_SetString(PyExc_RuntimeError, "edgefn.runtime._native.init was not called"); return NULL; } } while (0)

/* The first `n` arguments as non-null function addresses; 0 with an exception set if one is not. */
static int addresses(PyObject *const *args, int n, void **out) {
    for (int i = 0; i < n; i++) {
        out[i] = PyLong_AsVoidPtr(args[i]);
        if (out[i] == NULL) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "function address #%d is null", i);
            return 0;
        }
    }
    return 1;
}

static PyObject *native_init(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_ARGS(20, "init(16 function addresses, sizeof extern, sizeof val, sizeof instance, sizeof val_raw)");
    void *fns[16];
    if (!addresses(args, 16, fns)) return NULL;
    size_t sizes[4] = { PyLong_AsSize_t(args[16]), PyLong_AsSize_t(args[17]), PyLong_AsSize_t(args[18]), PyLong_AsSize_t(args[19]) };
    if (PyErr_Occurred()) return NULL;
    if (sizes[0] != sizeof(wt_extern_t) || sizes[1] != sizeof(wt_val_t) || sizes[2] != sizeof(wt_instance_t) || sizes[3] != sizeof(wt_val_raw_t)) {
        PyErr_Format(PyExc_RuntimeError, "wasmtime's C-API layouts changed (extern %zu/%zu, val %zu/%zu, instance %zu/%zu, val_raw %zu/%zu): edgefn/runtime/_native.c needs updating",
                     sizes[0], sizeof(wt_extern_t), sizes[1], sizeof(wt_val_t), sizes[2], sizeof(wt_instance_t), sizes[3], sizeof(wt_val_raw_t));
        return NULL;
    }
    api.store_new = (store_new_fn)fns[0];
    api.store_context = (store_context_fn)fns[1];
    api.store_delete = (store_delete_fn)fns[2];
    api.store_limiter = (store_limiter_fn)fns[3];
    api.set_fuel = (set_fuel_fn)fns[4];
    api.get_fuel = (get_fuel_fn)fns[5];
    api.set_epoch_deadline = (set_epoch_deadline_fn)fns[6];
    api.pre_instantiate = (pre_instantiate_fn)fns[7];
    api.export_nth = (export_nth_fn)fns[8];
    api.func_call = (func_call_fn)fns[9];
    api.memory_data = (memory_data_fn)fns[10];
    api.memory_data_size = (memory_data_size_fn)fns[11];
    api.error_new = (error_new_fn)fns[12];
    api.memory_creator_set = (memory_creator_set_fn)fns[13];
    api.caller_export_get = (caller_export_get_fn)fns[14];
    api.caller_context = (caller_context_fn)fns[15];
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) page_size = (size_t)ps;
    api_ready = 1;
    Py_RETURN_NONE;
}

static PyObject *native_install_memory_creator(PyObject *self, PyObject *config) {
    (void)self;
    NEED_API();
    void *ptr = PyLong_AsVoidPtr(config);
    if (ptr == NULL) return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_ValueError, "a null wasm_config_t"), NULL);
    wt_memory_creator_t creator = { NULL, new_memory, no_finalizer };
    api.memory_creator_set(ptr, &creator); /* wasmtime copies the struct */
    Py_RETURN_NONE;
}

/* a Store with fuel, an epoch deadline and limits, or NULL with *err set (or a Python error if both are NULL) */
static core_store_t *store_create(void *engine, unsigned long long fuel, unsigned long long ticks, size_t cap, long long table_elements,
                                  long long tables, long long memories, long long instances, PyObject *env, void **err) {
    *err = NULL;
    core_store_t *s = PyMem_RawCalloc(1, sizeof(core_store_t));
    if (s == NULL) return (core_store_t *)PyErr_NoMemory();
    s->store = api.store_new(engine, NULL, no_finalizer);
    if (env != Py_None) {
        s->env = env;
        Py_INCREF(s->env);
    }
    s->ctx = api.store_context(s->store);
    s->budget.cap = cap;
    s->args[0].kind = s->args[1].kind = KIND_I32;
    *err = api.set_fuel(s->ctx, fuel);
    if (*err != NULL) {
        api.store_delete(s->store);
        Py_XDECREF(s->env);
        PyMem_RawFree(s);
        return NULL;
    }
    api.store_limiter(s->store, -1, table_elements, instances, tables, memories);
    api.set_epoch_deadline(s->ctx, ticks);
    return s;
}

static void store_destroy(core_store_t *s) {
    api.store_delete(s->store); /* frees its memories, which credit s->budget: so the handle goes last */
    Py_XDECREF(s->env);
    PyMem_RawFree(s);
}

/* the 9 arguments of store_new (and the first 9 of run_fresh) -> a Store, or NULL (*err set, or a Python error) */
static core_store_t *store_from_args(PyObject *const *args, void **err) {
    *err = NULL;
    void *engine = PyLong_AsVoidPtr(args[0]);
    unsigned long long fuel = PyLong_AsUnsignedLongLong(args[1]);
    unsigned long long ticks = PyLong_AsUnsignedLongLong(args[2]);
    size_t cap = PyLong_AsSize_t(args[3]);
    long long table_elements = PyLong_AsLongLong(args[4]), tables = PyLong_AsLongLong(args[5]);
    long long memories = PyLong_AsLongLong(args[6]), instances = PyLong_AsLongLong(args[7]);
    if (PyErr_Occurred()) return NULL;
    if (args[8] != Py_None && !PyBytes_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError, "store_new: env must be bytes (fastcall.pack_env) or None");
        return NULL;
    }
    return store_create(engine, fuel, ticks, cap, table_elements, tables, memories, instances, args[8], err);
}

/* store_new(engine, fuel, epoch_ticks, linear_cap, table_elements, tables, memories, instances, env) -> handle */
static PyObject *native_store_new(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_API();
    NEED_ARGS(9, "store_new takes 9 arguments");
    void *err;
    core_store_t *s = store_from_args(args, &err);
    if (s == NULL) return err != NULL ? failure(err, NULL) : NULL;
    return PyLong_FromVoidPtr(s);
}

static PyObject *native_context(PyObject *self, PyObject *handle) {
    (void)self;
    core_store_t *s = store_of(handle);
    return s ? PyLong_FromVoidPtr(s->ctx) : NULL;
}

static PyObject *native_store_delete(PyObject *self, PyObject *handle) {
    (void)self;
    core_store_t *s = store_of(handle);
    if (s == NULL) return NULL;
    store_destroy(s);
    Py_RETURN_NONE;
}

/* instantiate `pre` in the Store and find its ABI exports (with the GIL released): -1 done, -2 failed
 * (*err or *trap set), else the index of a missing export */
static int store_instantiate(core_store_t *s, void *pre, const size_t idx[3], long long init_idx, void **err, void **trap) {
    int missing = -1;
    *trap = NULL;
    Py_BEGIN_ALLOW_THREADS
    charging = &s->budget;
    running = s; /* a start function may make host calls */
    *err = api.pre_instantiate(pre, s->ctx, &s->instance, trap);
    running = NULL;
    charging = NULL;
    if (*err == NULL && *trap == NULL) {
        char *name;
        size_t name_len;
        wt_extern_t *out[3] = { &s->memory, &s->alloc, &s->handle };
        for (int i = 0; i < 3 && missing < 0; i++)
            if (!api.export_nth(s->ctx, &s->instance, idx[i], &name, &name_len, out[i])) missing = (int)idx[i];
        if (missing < 0 && init_idx >= 0) {
            if (!api.export_nth(s->ctx, &s->instance, (size_t)init_idx, &name, &name_len, &s->init)) missing = (int)init_idx;
            s->has_init = 1;
        }
    } else {
        missing = -2;
    }
    Py_END_ALLOW_THREADS
    return missing;
}

/* instantiate(handle, pre, memory_export, alloc_export, handle_export, init_export or -1) -> None | (1, error, trap) */
static PyObject *native_instantiate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_ARGS(6, "instantiate takes 6 arguments");
    core_store_t *s = store_of(args[0]);
    void *pre = PyLong_AsVoidPtr(args[1]);
    size_t idx[3] = { PyLong_AsSize_t(args[2]), PyLong_AsSize_t(args[3]), PyLong_AsSize_t(args[4]) };
    long long init_idx = PyLong_AsLongLong(args[5]);
    if (s == NULL || PyErr_Occurred()) return NULL;
    void *err, *trap;
    int missing = store_instantiate(s, pre, idx, init_idx, &err, &trap);
    if (missing == -2) return failure(err, trap);
    if (missing >= 0) return PyErr_Format(PyExc_IndexError, "instance has no export #%d", missing);
    Py_RETURN_NONE;
}

/* call_init(handle) -> None | (1, error, trap): the module's `_initialize` */
static PyObject *native_call_init(PyObject *self, PyObject *handle) {
    (void)self;
    core_store_t *s = store_of(handle);
    if (s == NULL) return NULL;
    if (!s->has_init) Py_RETURN_NONE;
    void *err, *trap = NULL;
    Py_BEGIN_ALLOW_THREADS
    running = s;
    err = api.func_call(s->ctx, &s->init.of.func, NULL, 0, NULL, 0, &trap);
    running = NULL;
    Py_END_ALLOW_THREADS
    if (err != NULL || trap != NULL) return failure(err, trap);
    Py_RETURN_NONE;
}

/* what one call of edgefn_alloc + edgefn_handle ended in: kind 0 with the result at result_at (a bytes), else
 * the (kind, a, b, c) of invoke() below */
typedef struct { int kind; uint64_t a, b, c; uint8_t *result_at; void *err, *trap; } call_end_t;

/* edgefn_alloc, the event in, edgefn_handle, the result located (with the GIL released) */
static call_end_t store_call(core_store_t *s, const void *event, size_t event_len, size_t max_result) {
    call_end_t e = { 0, 0, 0, 0, NULL, NULL, NULL };
    Py_BEGIN_ALLOW_THREADS
    running = s;
    s->args[0].kind = KIND_I32;
    s->args[0].of.i32 = (int32_t)(uint32_t)event_len;
    e.err = api.func_call(s->ctx, &s->alloc.of.func, s->args, 1, &s->result, 1, &e.trap);
    if (e.err != NULL || e.trap != NULL) {
        e.kind = 1;
    } else {
        uint32_t ptr = (uint32_t)s->result.of.i32;
        size_t size = api.memory_data_size(s->ctx, &s->memory.of);
        if (ptr == 0 || (uint64_t)ptr + (uint64_t)event_len > size) {
            e.kind = 2;
            e.a = ptr;
        } else {
            memcpy(api.memory_data(s->ctx, &s->memory.of) + ptr, event, event_len);
            s->args[0].kind = s->args[1].kind = KIND_I32;
            s->args[0].of.i32 = (int32_t)ptr;
            s->args[1].of.i32 = (int32_t)(uint32_t)event_len;
            e.err = api.func_call(s->ctx, &s->handle.of.func, s->args, 2, &s->result, 1, &e.trap);
            if (e.err != NULL || e.trap != NULL) {
                e.kind = 1;
            } else {
                uint64_t packed = (uint64_t)s->result.of.i64;
                uint64_t rptr = packed >> 32, rlen = packed & 0xFFFFFFFFu;
                size = api.memory_data_size(s->ctx, &s->memory.of); /* the guest may have grown it */
                if (rlen == 0) {
                    e.kind = 3;
                } else if (rlen > max_result) {
                    e.kind = 4;
                    e.a = rlen;
                } else if (rptr + rlen > size) {
                    e.kind = 5;
                    e.a = rptr;
                    e.b = rlen;
                    e.c = size;
                } else {
                    e.result_at = api.memory_data(s->ctx, &s->memory.of) + rptr;
                    e.a = rlen;
                }
            }
        }
    }
    running = NULL;
    Py_END_ALLOW_THREADS
    return e;
}

/* the Python value of a call's end: the result bytes, a failure, or (kind, a, b, c) */
static PyObject *call_end_value(const call_end_t *e) {
    if (e->kind == 1) return failure(e->err, e->trap);
    if (e->kind != 0) return Py_BuildValue("(iKKK)", e->kind, (unsigned long long)e->a, (unsigned long long)e->b, (unsigned long long)e->c);
    return PyBytes_FromStringAndSize((const char *)e->result_at, (Py_ssize_t)e->a);
}

/* invoke(handle, event, max_result_bytes) -> result bytes, or (kind, a, b, c):
 *   (1, error, trap)             a call failed (trap or engine error)
 *   (2, address, 0, 0)           edgefn_alloc returned an address the event does not fit at
 *   (3, 0, 0, 0)                 an empty result
 *   (4, length, 0, 0)            a result over max_result_bytes
 *   (5, address, length, size)   a result outside the memory */
static PyObject *native_invoke(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_ARGS(3, "invoke takes 3 arguments");
    core_store_t *s = store_of(args[0]);
    if (s == NULL) return NULL;
    Py_buffer event;
    if (PyObject_GetBuffer(args[1], &event, PyBUF_SIMPLE) != 0) return NULL;
    size_t max_result = PyLong_AsSize_t(args[2]);
    if (PyErr_Occurred()) {
        PyBuffer_Release(&event);
        return NULL;
    }
    call_end_t e = store_call(s, event.buf, (size_t)event.len, max_result);
    PyBuffer_Release(&event);
    return call_end_value(&e);
}

/* run_fresh(the 9 arguments of store_new, pre, memory_export, alloc_export, handle_export, event, max_result_bytes)
 *   -> (stage, value, fuel left, peak, refused asked, refused cap)
 * A fresh Store, its instance and one invocation, then the Store dropped: what store_new, instantiate,
 * invoke, fuel, memory and store_delete do, in one call (a module without `_initialize` or WASI). `stage`
 * says where it ended: 0 invoked (value as invoke's), 1 the Store refused (value a failure), 2 the
 * instantiation failed (value a failure). */
static PyObject *native_run_fresh(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_API();
    NEED_ARGS(15, "run_fresh takes 15 arguments");
    void *pre = PyLong_AsVoidPtr(args[9]);
    size_t idx[3] = { PyLong_AsSize_t(args[10]), PyLong_AsSize_t(args[11]), PyLong_AsSize_t(args[12]) };
    size_t max_result = PyLong_AsSize_t(args[14]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer event;
    if (PyObject_GetBuffer(args[13], &event, PyBUF_SIMPLE) != 0) return NULL;
    void *err, *trap = NULL;
    core_store_t *s = store_from_args(args, &err);
    if (s == NULL) {
        PyBuffer_Release(&event);
        return err != NULL ? Py_BuildValue("(iNKnnn)", 1, failure(err, NULL), 0ULL, (Py_ssize_t)0, (Py_ssize_t)0, (Py_ssize_t)0) : NULL;
    }
    int stage = 0;
    PyObject *value;
    int missing = store_instantiate(s, pre, idx, -1, &err, &trap);
    if (missing == -2) {
        stage = 2;
        value = failure(err, trap);
    } else if (missing >= 0) {
        value = PyErr_Format(PyExc_IndexError, "instance has no export #%d", missing);
    } else {
        call_end_t e = store_call(s, event.buf, (size_t)event.len, max_result);
        value = call_end_value(&e);
    }
    PyBuffer_Release(&event);
    uint64_t remaining = 0;
    void *fuel_err = api.get_fuel(s->ctx, &remaining);
    budget_t budget = s->budget;
    store_destroy(s);
    if (value == NULL) return NULL;
    if (fuel_err != NULL) {
        Py_DECREF(value);
        return Py_BuildValue("(iNKnnn)", 1, failure(fuel_err, NULL), 0ULL, (Py_ssize_t)0, (Py_ssize_t)0, (Py_ssize_t)0);
    }
    return Py_BuildValue("(iNKnnn)", stage, value, (unsigned long long)remaining, (Py_ssize_t)budget.peak,
                         (Py_ssize_t)budget.refused_asked, (Py_ssize_t)budget.refused_cap);
}

/* set_budget(handle, fuel, epoch_ticks) -> None | (1, error, 0): a warm instance's next invocation */
static PyObject *native_rearm(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_ARGS(3, "rearm takes 3 arguments");
    core_store_t *s = store_of(args[0]);
    unsigned long long fuel = PyLong_AsUnsignedLongLong(args[1]);
    unsigned long long ticks = PyLong_AsUnsignedLongLong(args[2]);
    if (s == NULL || PyErr_Occurred()) return NULL;
    void *err = api.set_fuel(s->ctx, fuel);
    if (err != NULL) return failure(err, NULL);
    api.set_epoch_deadline(s->ctx, ticks);
    Py_RETURN_NONE;
}

static PyObject *native_fuel(PyObject *self, PyObject *handle) {
    (void)self;
    core_store_t *s = store_of(handle);
    if (s == NULL) return NULL;
    uint64_t remaining = 0;
    void *err = api.get_fuel(s->ctx, &remaining);
    if (err != NULL) return failure(err, NULL);
    return PyLong_FromUnsignedLongLong(remaining);
}

/* memory(handle) -> (peak, refused_asked, refused_cap): the Store's budget */
static PyObject *native_memory(PyObject *self, PyObject *handle) {
    (void)self;
    core_store_t *s = store_of(handle);
    if (s == NULL) return NULL;
    return Py_BuildValue("(nnn)", (Py_ssize_t)s->budget.peak, (Py_ssize_t)s->budget.refused_asked, (Py_ssize_t)s->budget.refused_cap);
}

/* --- host functions (edgefn:host/v1) that need no Python ------------------------------------------- */

/* env_get(key_ptr, key_len, buf_ptr, buf_cap) -> i32 (guest-sdk/ABI.md): the value's length, copied only if it
 * fits; -1 unset; -2 a key or buffer outside the caller's memory. The env is the running Store's, laid out by
 * fastcall.pack_env as entries of (u32 key length, u32 value length, key, value); no GIL is taken. */
static void *host_env_get(void *env, void *caller, wt_val_raw_t *vals, size_t count) {
    (void)env;
    if (count < 4) return NULL; /* the linker checked the type: four i32 in, one out */
    uint64_t kp = (uint32_t)vals[0].i32, kl = (uint32_t)vals[1].i32, bp = (uint32_t)vals[2].i32, bc = (uint32_t)vals[3].i32;
    int32_t out = -2;
    wt_extern_t item;
    void *ctx = api.caller_context(caller);
    if (api.caller_export_get(caller, "memory", 6, &item) && item.kind == EXTERN_MEMORY) {
        size_t size = api.memory_data_size(ctx, &item.of);
        uint8_t *base = api.memory_data(ctx, &item.of);
        if (kp + kl <= size) {
            core_store_t *s = running;
            const uint8_t *at = s && s->env ? (const uint8_t *)PyBytes_AS_STRING(s->env) : NULL;
            const uint8_t *end = at ? at + PyBytes_GET_SIZE(s->env) : NULL;
            const uint8_t *value = NULL;
            uint32_t klen, vlen = 0;
            while (at != NULL && at + 8 <= end) {
                memcpy(&klen, at, 4);
                memcpy(&vlen, at + 4, 4);
                if ((size_t)(end - at - 8) < (size_t)klen + vlen) break; /* not pack_env's layout: nothing past here */
                if (klen == kl && memcmp(at + 8, base + kp, kl) == 0) {
                    value = at + 8 + klen;
                    break;
                }
                at += 8 + (size_t)klen + vlen;
            }
            if (value == NULL) out = -1;
            else if (vlen > bc) out = (int32_t)vlen; /* does not fit: the length, for a retry with a bigger buffer */
            else if (bp + vlen > size) out = -2;
            else {
                memcpy(base + bp, value, vlen);
                out = (int32_t)vlen;
            }
        }
    }
    vals[0].i32 = out;
    return NULL;
}

static PyObject *native_host_env_get(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyLong_FromVoidPtr((void *)host_env_get);
}

/* --- CBOR (RFC 8949) encoding of an event document ------------------------------------------------- */

/* The subset events are made of: maps, arrays (lists, tuples), text, bytes, ints within 64 bits, bools,
 * None, floats (as 64-bit), in the same bytes cbor2.dumps writes for them (definite lengths, shortest
 * heads). cbor2's encoder writes each item through a Python file object: ~30 us for a typical event. */

typedef struct { uint8_t *data; size_t len, cap; } cbor_buf_t;

static int cbor_reserve(cbor_buf_t *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more) cap *= 2;
    uint8_t *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int cbor_head(cbor_buf_t *b, uint8_t major, uint64_t value) {
    if (cbor_reserve(b, 9) < 0) return -1;
    uint8_t *at = b->data + b->len;
    major <<= 5;
    if (value < 24) {
        at[0] = major | (uint8_t)value;
        b->len += 1;
    } else if (value <= 0xFF) {
        at[0] = major | 24;
        at[1] = (uint8_t)value;
        b->len += 2;
    } else if (value <= 0xFFFF) {
        at[0] = major | 25;
        at[1] = (uint8_t)(value >> 8);
        at[2] = (uint8_t)value;
        b->len += 3;
    } else if (value <= 0xFFFFFFFFu) {
        at[0] = major | 26;
        for (int i = 0; i < 4; i++) at[1 + i] = (uint8_t)(value >> (24 - 8 * i));
        b->len += 5;
    } else {
        at[0] = major | 27;
        for (int i = 0; i < 8; i++) at[1 + i] = (uint8_t)(value >> (56 - 8 * i));
        b->len += 9;
    }
    return 0;
}

static int cbor_raw(cbor_buf_t *b, uint8_t major, const char *data, Py_ssize_t len) {
    if (cbor_head(b, major, (uint64_t)len) < 0 || cbor_reserve(b, (size_t)len) < 0) return -1;
    memcpy(b->data + b->len, data, (size_t)len);
    b->len += (size_t)len;
    return 0;
}

static int cbor_item(cbor_buf_t *b, PyObject *obj, int depth) {
    if (depth > 64) {
        PyErr_SetString(PyExc_ValueError, "cbor_encode: nested deeper than 64 levels");
        return -1;
    }
    if (PyUnicode_Check(obj)) {
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &len);
        return utf8 == NULL ? -1 : cbor_raw(b, 3, utf8, len);
    }
    if (PyBytes_Check(obj)) return cbor_raw(b, 2, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj));
    if (PyDict_Check(obj)) {
        if (cbor_head(b, 5, (uint64_t)PyDict_GET_SIZE(obj)) < 0) return -1;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(obj, &pos, &key, &value))
            if (cbor_item(b, key, depth + 1) < 0 || cbor_item(b, value, depth + 1) < 0) return -1;
        return 0;
    }
    if (PyList_Check(obj) || PyTuple_Check(obj)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
        PyObject **items = PySequence_Fast_ITEMS(obj);
        if (cbor_head(b, 4, (uint64_t)n) < 0) return -1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (cbor_item(b, items[i], depth + 1) < 0) return -1;
        return 0;
    }
    if (obj == Py_True || obj == Py_False || obj == Py_None) {
        if (cbor_reserve(b, 1) < 0) return -1;
        b->data[b->len++] = obj == Py_True ? 0xF5 : obj == Py_False ? 0xF4 : 0xF6;
        return 0;
    }
    if (PyLong_Check(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow == 0) {
            if (v == -1 && PyErr_Occurred()) return -1;
            return v >= 0 ? cbor_head(b, 0, (uint64_t)v) : cbor_head(b, 1, (uint64_t)(-(v + 1)));
        }
        unsigned long long u = PyLong_AsUnsignedLongLong(obj); /* 2^63 .. 2^64-1 */
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "cbor_encode: an integer outside 64 bits");
            return -1;
        }
        return cbor_head(b, 0, u);
    }
    if (PyFloat_Check(obj)) {
        double d = PyFloat_AS_DOUBLE(obj);
        if (d != d || d - d != 0.0) { /* NaN and the infinities: half precision, as cbor2 writes them */
            if (cbor_reserve(b, 3) < 0) return -1;
            b->data[b->len++] = 0xF9;
            b->data[b->len++] = d != d ? 0x7E : d > 0 ? 0x7C : 0xFC;
            b->data[b->len++] = 0x00;
            return 0;
        }
        uint64_t bits;
        memcpy(&bits, &d, 8);
        if (cbor_reserve(b, 9) < 0) return -1;
        b->data[b->len++] = 0xFB;
        for (int i = 0; i < 8; i++) b->data[b->len++] = (uint8_t)(bits >> (56 - 8 * i));
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "cbor_encode: cannot encode a %.100s", Py_TYPE(obj)->tp_name);
    return -1;
}

static PyObject *native_cbor_encode(PyObject *self, PyObject *obj) {
    (void)self;
    cbor_buf_t b = { NULL, 0, 0 };
    PyObject *out = cbor_item(&b, obj, 0) < 0 ? NULL : PyBytes_FromStringAndSize((const char *)b.data, (Py_ssize_t)b.len);
    PyMem_Free(b.data);
    return out;
}

/* cbor_decode(data) -> the one item `data` holds, or NotImplemented: a guest's result in C (cbor2's decoder
 * reads through a file object, ~4 µs a result on the request path). Only well-formed items of the types
 * results hold are decoded here (definite-length maps, arrays, text, bytes; 64-bit ints; bools, null;
 * floats) with text or integer map keys, and only when nothing follows the item. Anything else —
 * a tag, an indefinite length, undefined, a truncated or malformed item, trailing bytes — answers
 * NotImplemented, and the caller decodes with cbor2, whose value or error then stands. */

typedef struct { const uint8_t *at, *end; } cbor_in_t;

#define CBOR_OTHER ((PyObject *)1) /* not decoded here: cbor2 decides */

static int cbor_read_head(cbor_in_t *in, uint8_t *major, uint64_t *value, uint8_t *info) {
    if (in->at >= in->end) return 0;
    uint8_t first = *in->at++;
    *major = first >> 5;
    *info = first & 0x1f;
    if (*info < 24) {
        *value = *info;
        return 1;
    }
    int n = *info == 24 ? 1 : *info == 25 ? 2 : *info == 26 ? 4 : *info == 27 ? 8 : 0;
    if (n == 0 || in->end - in->at < n) return 0;
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | *in->at++;
    *value = v;
    return 1;
}

static PyObject *cbor_read_item(cbor_in_t *in, int depth) {
    uint8_t major, info;
    uint64_t value;
    if (depth > 64 || !cbor_read_head(in, &major, &value, &info)) return CBOR_OTHER;
    switch (major) {
    case 0:
        return PyLong_FromUnsignedLongLong(value);
    case 1:
        if (value > (uint64_t)INT64_MAX) return CBOR_OTHER;
        return PyLong_FromLongLong(-1 - (long long)value);
    case 2:
    case 3:
        if (value > (uint64_t)(in->end - in->at)) return CBOR_OTHER;
        {
            const char *text = (const char *)in->at;
            in->at += value;
            if (major == 2) return PyBytes_FromStringAndSize(text, (Py_ssize_t)value);
            PyObject *str = PyUnicode_DecodeUTF8(text, (Py_ssize_t)value, "strict");
            if (str == NULL) {
                PyErr_Clear();
                return CBOR_OTHER;
            }
            return str;
        }
    case 4:
    case 5: {
        if (value > (uint64_t)(in->end - in->at)) return CBOR_OTHER; /* each entry takes a byte at least */
        PyObject *out = major == 4 ? PyList_New((Py_ssize_t)value) : PyDict_New();
        if (out == NULL) return NULL;
        for (uint64_t i = 0; i < value; i++) {
            PyObject *key = NULL;
            if (major == 5) {
                key = cbor_read_item(in, depth + 1);
                if (key == NULL || key == CBOR_OTHER) {
                    Py_DECREF(out);
                    return key;
                }
                if (!PyUnicode_CheckExact(key) && !PyLong_CheckExact(key)) {
                    Py_DECREF(key);
                    Py_DECREF(out);
                    return CBOR_OTHER;
                }
            }
            PyObject *item = cbor_read_item(in, depth + 1);
            if (item == NULL || item == CBOR_OTHER) {
                Py_XDECREF(key);
                Py_DECREF(out);
                return item;
            }
            if (major == 4) {
                PyList_SET_ITEM(out, (Py_ssize_t)i, item);
            } else {
                int failed = PyDict_SetItem(out, key, item);
                Py_DECREF(key);
                Py_DECREF(item);
                if (failed) {
                    Py_DECREF(out);
                    return NULL;
                }
            }
        }
        return out;
    }
    case 7:
        if (info == 20) Py_RETURN_FALSE;
        if (info == 21) Py_RETURN_TRUE;
        if (info == 22) Py_RETURN_NONE;
        if (info == 25 || info == 26 || info == 27) {
            uint8_t raw[8];
            int n = info == 25 ? 2 : info == 26 ? 4 : 8;
            for (int i = 0; i < n; i++) raw[i] = (uint8_t)(value >> (8 * (n - 1 - i)));
            double d = n == 2 ? PyFloat_Unpack2((const char *)raw, 0) : n == 4 ? PyFloat_Unpack4((const char *)raw, 0) : PyFloat_Unpack8((const char *)raw, 0);
            if (d == -1.0 && PyErr_Occurred()) return NULL;
            return PyFloat_FromDouble(d);
        }
        return CBOR_OTHER;
    default:
        return CBOR_OTHER; /* tags (6) */
    }
}

static PyObject *native_cbor_decode(PyObject *self, PyObject *data) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) != 0) return NULL;
    cbor_in_t in = { view.buf, (const uint8_t *)view.buf + view.len };
    PyObject *out = cbor_read_item(&in, 0);
    if (out != NULL && out != CBOR_OTHER && in.at != in.end) {
        Py_DECREF(out);
        out = CBOR_OTHER;
    }
    PyBuffer_Release(&view);
    if (out == CBOR_OTHER) Py_RETURN_NOTIMPLEMENTED;
    return out;
}

/* marshal_decode(data) -> the one document `data` holds: a Python component's result (handle-marshal), which
 * CPython encodes in C inside the guest (marshal.dumps, format 4). The guest is not trusted, and CPython's
 * own marshal.loads is not meant for untrusted bytes (it builds code objects, among others), so this is a
 * strict reader of the subset results hold: dicts with text or integer keys, lists, text, bytes, ints up to
 * 64 bits, floats, bools, None; references only to text, bytes and numbers (a shared or cyclic container is
 * refused: the host's checks then walk a tree). Anything else, a truncated document or trailing bytes
 * raise ValueError naming what was wrong and where. */

#define MARSHAL_FLAG_REF 0x80
#define MARSHAL_MAX_DEPTH 64

typedef struct {
    const uint8_t *start, *at, *end;
    PyObject *refs; /* list: what FLAG_REF registered, in order; None for a container (never referenced) */
} marshal_in_t;

static PyObject *marshal_fail(const marshal_in_t *in, const char *what) {
    PyErr_Format(PyExc_ValueError, "%s at byte %zd", what, (Py_ssize_t)(in->at - in->start));
    return NULL;
}

static int marshal_u32(marshal_in_t *in, uint32_t *out) {
    if (in->end - in->at < 4) return 0;
    *out = (uint32_t)in->at[0] | ((uint32_t)in->at[1] << 8) | ((uint32_t)in->at[2] << 16) | ((uint32_t)in->at[3] << 24);
    in->at += 4;
    return 1;
}

/* a length that the rest of the document can hold (each element takes a byte at least) */
static int marshal_size(marshal_in_t *in, int short_form, Py_ssize_t *n) {
    uint32_t v;
    if (short_form) {
        if (in->at >= in->end) return 0;
        v = *in->at++;
    } else if (!marshal_u32(in, &v)) {
        return 0;
    }
    if ((int32_t)v < 0 || (Py_ssize_t)v > in->end - in->at) return 0;
    *n = (Py_ssize_t)v;
    return 1;
}

static int marshal_keep(marshal_in_t *in, int flagged, PyObject *obj) {
    return !flagged || PyList_Append(in->refs, obj) == 0;
}

static PyObject *marshal_read(marshal_in_t *in, int depth);

static PyObject *marshal_text(marshal_in_t *in, uint8_t type) {
    Py_ssize_t n;
    if (!marshal_size(in, type == 'z' || type == 'Z', &n)) return marshal_fail(in, "a truncated text");
    const char *data = (const char *)in->at;
    PyObject *out;
    if (type == 'u' || type == 't') {
        out = PyUnicode_DecodeUTF8(data, n, "strict");
        if (out == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return marshal_fail(in, "text that is not UTF-8");
        }
    } else {
        for (Py_ssize_t i = 0; i < n; i++)
            if ((uint8_t)data[i] >= 0x80) return marshal_fail(in, "a non-ASCII byte in ASCII text");
        out = PyUnicode_DecodeASCII(data, n, "strict");
    }
    in->at += n;
    return out;
}

static PyObject *marshal_long(marshal_in_t *in) {
    uint32_t raw;
    if (!marshal_u32(in, &raw)) return marshal_fail(in, "a truncated integer");
    int32_t n = (int32_t)raw;
    uint32_t digits = n < 0 ? (uint32_t)(-(int64_t)n) : (uint32_t)n;
    /* 15-bit digits, least significant first: five hold 64 bits */
    if (digits > 5 || in->end - in->at < (Py_ssize_t)(2 * digits)) return marshal_fail(in, "an integer over 64 bits or truncated");
    uint64_t v = 0;
    for (uint32_t i = 0; i < digits; i++) {
        uint32_t d = (uint32_t)in->at[2 * i] | ((uint32_t)in->at[2 * i + 1] << 8);
        if (d >= (1u << 15) || (i == 4 && d >= 16) || (i == digits - 1 && d == 0)) return marshal_fail(in, "a malformed integer");
        v |= (uint64_t)d << (15 * i);
    }
    in->at += 2 * digits;
    if (n >= 0) return PyLong_FromUnsignedLongLong(v);
    if (v > (uint64_t)INT64_MAX + 1) return marshal_fail(in, "an integer under -2**63");
    return PyLong_FromLongLong(v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(long long)v);
}

static PyObject *marshal_read(marshal_in_t *in, int depth) {
    if (depth > MARSHAL_MAX_DEPTH) return marshal_fail(in, "nested too deep");
    if (in->at >= in->end) return marshal_fail(in, "a truncated document");
    uint8_t code = *in->at++;
    int flagged = (code & MARSHAL_FLAG_REF) != 0;
    uint8_t type = code & (uint8_t)~MARSHAL_FLAG_REF;
    PyObject *out = NULL;
    switch (type) {
    case 'N':
        Py_RETURN_NONE;
    case 'T':
        Py_RETURN_TRUE;
    case 'F':
        Py_RETURN_FALSE;
    case 'i': {
        uint32_t v;
        if (!marshal_u32(in, &v)) return marshal_fail(in, "a truncated integer");
        out = PyLong_FromLong((long)(int32_t)v);
        break;
    }
    case 'l':
        out = marshal_long(in);
        break;
    case 'g': {
        if (in->end - in->at < 8) return marshal_fail(in, "a truncated float");
        double d = PyFloat_Unpack8((const char *)in->at, 1);
        if (d == -1.0 && PyErr_Occurred()) return NULL;
        in->at += 8;
        out = PyFloat_FromDouble(d);
        break;
    }
    case 's': {
        Py_ssize_t n;
        if (!marshal_size(in, 0, &n)) return marshal_fail(in, "truncated bytes");
        out = PyBytes_FromStringAndSize((const char *)in->at, n);
        in->at += n;
        break;
    }
    case 'u': case 't': case 'a': case 'A': case 'z': case 'Z':
        out = marshal_text(in, type);
        break;
    case 'r': {
        uint32_t idx;
        if (!marshal_u32(in, &idx)) return marshal_fail(in, "a truncated reference");
        if ((Py_ssize_t)idx >= PyList_GET_SIZE(in->refs) || PyList_GET_ITEM(in->refs, idx) == Py_None)
            return marshal_fail(in, "a reference to a container or to nothing before it");
        out = PyList_GET_ITEM(in->refs, idx);
        Py_INCREF(out);
        return out;
    }
    case '[': {
        Py_ssize_t n;
        if (!marshal_size(in, 0, &n)) return marshal_fail(in, "a truncated list");
        if (!marshal_keep(in, flagged, Py_None)) return NULL;
        out = PyList_New(n);
        if (out == NULL) return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = marshal_read(in, depth + 1);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, i, item);
        }
        return out;
    }
    case '{': {
        if (!marshal_keep(in, flagged, Py_None)) return NULL;
        out = PyDict_New();
        if (out == NULL) return NULL;
        for (;;) {
            if (in->at >= in->end) {
                Py_DECREF(out);
                return marshal_fail(in, "a truncated dict");
            }
            if (*in->at == '0') { /* the end of the dict */
                in->at++;
                return out;
            }
            PyObject *key = marshal_read(in, depth + 1);
            if (key == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            if (!PyUnicode_CheckExact(key) && !PyLong_CheckExact(key)) {
                Py_DECREF(key);
                Py_DECREF(out);
                return marshal_fail(in, "a dict key that is neither text nor an integer");
            }
            PyObject *value = marshal_read(in, depth + 1);
            int failed = value == NULL || PyDict_SetItem(out, key, value) != 0;
            Py_DECREF(key);
            Py_XDECREF(value);
            if (failed) {
                Py_DECREF(out);
                return NULL;
            }
        }
    }
    default:
        in->at--;
        PyErr_Format(PyExc_ValueError, "type code 0x%02x at byte %zd is not one a result holds", code, (Py_ssize_t)(in->at - in->start));
        return NULL;
    }
    if (out != NULL && !marshal_keep(in, flagged, out)) Py_CLEAR(out);
    return out;
}

static PyObject *native_marshal_decode(PyObject *self, PyObject *data) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) != 0) return NULL;
    marshal_in_t in = { view.buf, view.buf, (const uint8_t *)view.buf + view.len, PyList_New(0) };
    PyObject *out = in.refs != NULL ? marshal_read(&in, 0) : NULL;
    if (out != NULL && in.at != in.end) {
        Py_DECREF(out);
        out = marshal_fail(&in, "trailing bytes");
    }
    Py_XDECREF(in.refs);
    PyBuffer_Release(&view);
    return out;
}

/* --- the epoch ticker: a thread that never takes the GIL ------------------------------------------ */

/* A Python thread ticking every few ms must take the GIL for each tick: on a busy core that forces the
 * event loop to drop it (a GIL hand-off and two context switches per tick). This thread calls
 * wasmtime_engine_increment_epoch (thread-safe) directly; enter/leave are a mutex each. */

typedef void (*increment_epoch_fn)(void *engine);

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int started, stop, busy, parked;
    increment_epoch_fn increment;
    void *engines[8];
    int n_engines;
    long tick_ns, idle_ns;
    struct timespec last_active;
    PyObject *keep; /* the engines' Python objects: alive until the thread has stopped */
} ticker_t;

static long elapsed_ns(const struct timespec *from, const struct timespec *to) {
    return (to->tv_sec - from->tv_sec) * 1000000000L + (to->tv_nsec - from->tv_nsec);
}

static void add_ns(struct timespec *t, long ns) {
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) { t->tv_nsec -= 1000000000L; t->tv_sec++; }
}

static void *ticker_main(void *arg) {
    ticker_t *t = arg;
    struct timespec next, now;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        add_ns(&next, t->tick_ns);
        while (!t->stop && pthread_cond_timedwait(&t->wake, &t->lock, &next) != ETIMEDOUT) {}
        if (t->stop) break;
        pthread_mutex_unlock(&t->lock);
        for (int i = 0; i < t->n_engines; i++) t->increment(t->engines[i]);
        pthread_mutex_lock(&t->lock);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (t->busy == 0 && elapsed_ns(&t->last_active, &now) > t->idle_ns) {
            t->parked = 1; /* no guest for a while: no wake-ups until enter() */
            while (t->parked && !t->stop) pthread_cond_wait(&t->wake, &t->lock);
            clock_gettime(CLOCK_MONOTONIC, &next);
        } else if (elapsed_ns(&next, &now) > t->tick_ns) {
            next = now; /* fell behind (the machine was busy): tick on from now, no burst */
        }
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static void ticker_halt(ticker_t *t) {
    pthread_mutex_lock(&t->lock);
    int joinable = t->started;
    t->stop = 1;
    t->started = 0;
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
    if (joinable) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(t->thread, NULL);
        Py_END_ALLOW_THREADS
    }
}

static void ticker_destroy(PyObject *capsule) {
    ticker_t *t = PyCapsule_GetPointer(capsule, "edgefn.ticker");
    if (t == NULL) return;
    ticker_halt(t);
    Py_XDECREF(t->keep);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    PyMem_Free(t);
}

static ticker_t *ticker_of(PyObject *capsule) { return PyCapsule_GetPointer(capsule, "edgefn.ticker"); }

/* ticker_start(increment_epoch address, (engine addresses), tick_ms, idle_after_ms, keep) -> handle; `keep`
 * (the engines' Python objects) is held until the thread has stopped, so no engine is freed under it */
static PyObject *native_ticker_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_ARGS(5, "ticker_start(increment_epoch, engines, tick_ms, idle_after_ms, keep)");
    void *increment = PyLong_AsVoidPtr(args[0]);
    if (increment == NULL) return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_ValueError, "a null increment_epoch"), NULL);
    if (!PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) < 1 || PyTuple_GET_SIZE(args[1]) > 8) {
        PyErr_SetString(PyExc_TypeError, "engines: a tuple of 1 to 8 engine addresses");
        return NULL;
    }
    long tick_ms = PyLong_AsLong(args[2]), idle_ms = PyLong_AsLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (tick_ms < 1 || idle_ms < 0) { PyErr_SetString(PyExc_ValueError, "tick_ms >= 1 and idle_after_ms >= 0"); return NULL; }
    ticker_t *t = PyMem_Calloc(1, sizeof(ticker_t));
    if (t == NULL) return PyErr_NoMemory();
    t->n_engines = (int)PyTuple_GET_SIZE(args[1]);
    for (int i = 0; i < t->n_engines; i++) {
        t->engines[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(args[1], i));
        if (t->engines[i] == NULL) { PyMem_Free(t); return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_ValueError, "a null engine"), NULL); }
    }
    t->increment = (increment_epoch_fn)increment;
    Py_INCREF(args[4]);
    t->keep = args[4];
    t->tick_ns = tick_ms * 1000000L;
    t->idle_ns = idle_ms * 1000000L;
    clock_gettime(CLOCK_MONOTONIC, &t->last_active);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&t->lock, NULL);
    PyObject *capsule = PyCapsule_New(t, "edgefn.ticker", ticker_destroy);
    if (capsule == NULL) { Py_DECREF(t->keep); pthread_cond_destroy(&t->wake); pthread_mutex_destroy(&t->lock); PyMem_Free(t); return NULL; }
    int rc = pthread_create(&t->thread, NULL, ticker_main, t);
    if (rc != 0) { Py_DECREF(capsule); errno = rc; return PyErr_SetFromErrno(PyExc_OSError); }
    t->started = 1;
    return capsule;
}

static PyObject *native_ticker_enter(PyObject *self, PyObject *capsule) {
    (void)self;
    ticker_t *t = ticker_of(capsule);
    if (t == NULL) return NULL;
    pthread_mutex_lock(&t->lock);
    t->busy++;
    if (t->parked) { t->parked = 0; pthread_cond_broadcast(&t->wake); }
    pthread_mutex_unlock(&t->lock);
    Py_RETURN_NONE;
}

static PyObject *native_ticker_leave(PyObject *self, PyObject *capsule) {
    (void)self;
    ticker_t *t = ticker_of(capsule);
    if (t == NULL) return NULL;
    pthread_mutex_lock(&t->lock);
    t->busy--;
    clock_gettime(CLOCK_MONOTONIC, &t->last_active);
    pthread_mutex_unlock(&t->lock);
    Py_RETURN_NONE;
}

static PyObject *native_ticker_parked(PyObject *self, PyObject *capsule) {
    (void)self;
    ticker_t *t = ticker_of(capsule);
    if (t == NULL) return NULL;
    pthread_mutex_lock(&t->lock);
    int parked = t->parked;
    pthread_mutex_unlock(&t->lock);
    return PyBool_FromLong(parked);
}

static PyObject *native_ticker_stop(PyObject *self, PyObject *capsule) {
    (void)self;
    ticker_t *t = ticker_of(capsule);
    if (t == NULL) return NULL;
    ticker_halt(t);
    Py_RETURN_NONE;
}

/* --- a component's handle call (runtime/component.py) ------------------------------------------------ */

/* wasmtime_component_val_t as far as a list<u8> needs it: the kind, then the union (a list is size, data) */
typedef struct { size_t size; void *data; } wt_cvallist_t;
typedef struct { uint8_t kind; union { uint8_t u8; wt_cvallist_t list; unsigned char bytes[24]; } of; } wt_cval_t;
typedef void (*cvallist_new_uninit_fn)(wt_cvallist_t *out, size_t size);
typedef void (*cval_delete_fn)(wt_cval_t *val);
typedef void *(*cfunc_call_fn)(const void *func, void *ctx, const wt_cval_t *args, size_t nargs, wt_cval_t *results, size_t nresults);
typedef void *(*cfunc_post_return_fn)(const void *func, void *ctx);

static struct {
    cvallist_new_uninit_fn vallist_new_uninit;
    cval_delete_fn val_delete;
    cfunc_call_fn func_call;
    cfunc_post_return_fn post_return;
    uint8_t kind_u8, kind_list;
} capi;
static int capi_ready = 0;

static PyObject *native_init_component(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_API();
    NEED_ARGS(8, "init_component(4 function addresses, kind u8, kind list, sizeof val, offset of its union)");
    void *fns[4];
    if (!addresses(args, 4, fns)) return NULL;
    long kind_u8 = PyLong_AsLong(args[4]), kind_list = PyLong_AsLong(args[5]);
    size_t size = PyLong_AsSize_t(args[6]), offset = PyLong_AsSize_t(args[7]);
    if (PyErr_Occurred()) return NULL;
    if (size != sizeof(wt_cval_t) || offset != offsetof(wt_cval_t, of)) {
        PyErr_Format(PyExc_RuntimeError, "wasmtime's component value layout changed (size %zu/%zu, union at %zu/%zu): edgefn/runtime/_native.c needs updating",
                     size, sizeof(wt_cval_t), offset, offsetof(wt_cval_t, of));
        return NULL;
    }
    capi.vallist_new_uninit = (cvallist_new_uninit_fn)fns[0];
    capi.val_delete = (cval_delete_fn)fns[1];
    capi.func_call = (cfunc_call_fn)fns[2];
    capi.post_return = (cfunc_post_return_fn)fns[3];
    capi.kind_u8 = (uint8_t)kind_u8;
    capi.kind_list = (uint8_t)kind_list;
    capi_ready = 1;
    Py_RETURN_NONE;
}

/* The fuel a component's Store has left (after a call, whatever its outcome). */
static unsigned long long fuel_left(void *ctx) {
    uint64_t left = 0;
    if (api.get_fuel(ctx, &left)) return 0; /* fails only where fuel is off, which no edgefn engine is */
    return (unsigned long long)left;
}

static PyObject *call_failed(void *ctx, void *err) {
    return Py_BuildValue("(OKK)", Py_None, (unsigned long long)(uintptr_t)err, fuel_left(ctx));
}

/* call_component(context, func, event, fuel or None, epoch ticks) -> (result, 0, fuel left) | (None, error, fuel left).
 * Arms the Store (unless fuel is None: a new instance's Store was armed when made), copies the event into
 * a list<u8>, calls `handle`, copies the result out and runs post-return, with the GIL released only
 * around the call itself: wasmtime-py's ctypes calls release and retake it on each of the ~9 foreign
 * calls these steps take, a hand-off to the event loop each time the loop is waiting for it. */
static PyObject *native_call_component(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    NEED_API();
    NEED_ARGS(5, "call_component(context, func, event, fuel, epoch_ticks)");
    if (!capi_ready) { PyErr_SetString(PyExc_RuntimeError, "edgefn.runtime._native.init_component was not called"); return NULL; }
    void *ctx = PyLong_AsVoidPtr(args[0]);
    const void *func = PyLong_AsVoidPtr(args[1]);
    int arm = args[3] != Py_None;
    unsigned long long fuel = arm ? PyLong_AsUnsignedLongLong(args[3]) : 0;
    unsigned long long ticks = arm ? PyLong_AsUnsignedLongLong(args[4]) : 0;
    if (PyErr_Occurred()) return NULL;
    char *event;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(args[2], &event, &n) < 0) return NULL;
    void *err;
    if (arm) {
        err = api.set_fuel(ctx, fuel);
        if (err) return call_failed(ctx, err);
        api.set_epoch_deadline(ctx, ticks);
    }
    wt_cval_t param, result;
    memset(&param, 0, sizeof param);
    memset(&result, 0, sizeof result);
    param.kind = capi.kind_list;
    capi.vallist_new_uninit(&param.of.list, (size_t)n);
    wt_cval_t *items = param.of.list.data;
    for (Py_ssize_t i = 0; i < n; i++) {
        items[i].kind = capi.kind_u8;
        items[i].of.u8 = (uint8_t)event[i];
    }
    Py_BEGIN_ALLOW_THREADS
    err = capi.func_call(func, ctx, &param, 1, &result, 1);
    Py_END_ALLOW_THREADS
    capi.val_delete(&param);
    if (err) return call_failed(ctx, err);
    PyObject *out;
    if (result.kind == capi.kind_list) {
        size_t len = result.of.list.size;
        out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (out != NULL) {
            uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
            const wt_cval_t *got = result.of.list.data;
            for (size_t i = 0; i < len; i++) dst[i] = got[i].of.u8; /* the call's type is list<u8>: each item is a u8 */
        }
    } else {
        out = PyErr_Format(PyExc_TypeError, "expected a list<u8>, got value kind %d", result.kind);
    }
    capi.val_delete(&result);
    if (out == NULL) return NULL;
    err = capi.post_return(func, ctx);
    if (err) {
        Py_DECREF(out);
        return call_failed(ctx, err);
    }
    return Py_BuildValue("(NiK)", out, 0, fuel_left(ctx));
}

/* Whether the file system of an open directory has no room left: one fstatvfs, the GIL held (it takes
 * well under a microsecond on a tmpfs; releasing the GIL for it costs a hand-off to the event loop). */
static PyObject *native_fs_full(PyObject *self, PyObject *fd) {
    (void)self;
    long n = PyLong_AsLong(fd);
    if (n == -1 && PyErr_Occurred()) return NULL;
    struct statvfs st;
    if (fstatvfs((int)n, &st) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(st.f_bavail == 0);
}

static PyMethodDef methods[] = {
    {"init", (PyCFunction)(void (*)(void))native_init, METH_FASTCALL, "Bind the wasmtime C-API functions (their addresses) and check the struct layouts."},
    {"install_memory_creator", native_install_memory_creator, METH_O, "Make a wasm_config_t's engines take linear memory from this module."},
    {"store_new", (PyCFunction)(void (*)(void))native_store_new, METH_FASTCALL, "A Store with fuel, an epoch deadline and limits; returns its handle."},
    {"context", native_context, METH_O, "The wasmtime_context_t of a Store handle."},
    {"store_delete", native_store_delete, METH_O, "Drop a Store, its instance and memories."},
    {"instantiate", (PyCFunction)(void (*)(void))native_instantiate, METH_FASTCALL, "Instantiate an InstancePre in the Store and find its ABI exports."},
    {"call_init", native_call_init, METH_O, "Call the instance's _initialize export, if it has one."},
    {"invoke", (PyCFunction)(void (*)(void))native_invoke, METH_FASTCALL, "edgefn_alloc, copy the event in, edgefn_handle, copy the result out."},
    {"run_fresh", (PyCFunction)(void (*)(void))native_run_fresh, METH_FASTCALL, "A fresh Store, its instance, one invocation, the Store dropped: one call."},
    {"rearm", (PyCFunction)(void (*)(void))native_rearm, METH_FASTCALL, "Set a Store's fuel and epoch deadline for its next invocation."},
    {"fuel", native_fuel, METH_O, "The fuel a Store has left."},
    {"memory", native_memory, METH_O, "(peak, refused asked, refused cap) of a Store's memory budget."},
    {"cbor_decode", native_cbor_decode, METH_O, "The one CBOR item of a guest's result, or NotImplemented where cbor2 must decide."},
    {"marshal_decode", native_marshal_decode, METH_O, "The one document of a Python component's marshal result (a strict subset; ValueError otherwise)."},
    {"cbor_encode", native_cbor_encode, METH_O, "The CBOR bytes of an event document (maps, arrays, text, bytes, 64-bit ints, bools, None, floats)."},
    {"ticker_start", (PyCFunction)(void (*)(void))native_ticker_start, METH_FASTCALL, "Start a thread that advances engines' epochs every tick while guests run; returns its handle."},
    {"ticker_enter", native_ticker_enter, METH_O, "A guest is about to run (wakes a parked ticker)."},
    {"ticker_leave", native_ticker_leave, METH_O, "A guest stopped running."},
    {"ticker_parked", native_ticker_parked, METH_O, "Whether the ticker is parked (no guest ran for a while)."},
    {"ticker_stop", native_ticker_stop, METH_O, "Stop the ticker's thread and wait for it (idempotent)."},
    {"init_component", (PyCFunction)(void (*)(void))native_init_component, METH_FASTCALL, "Bind the component-call C-API functions and check the value layout."},
    {"call_component", (PyCFunction)(void (*)(void))native_call_component, METH_FASTCALL, "Arm a component's Store and call its handle: (result, 0, fuel left) or (None, error, fuel left)."},
    {"fs_full", native_fs_full, METH_O, "Whether the file system of an open directory fd has no room left."},
    {"host_env_get", native_host_env_get, METH_NOARGS, "The address of the env_get host function (a wasmtime unchecked callback)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "A core guest's Store, instantiation, calls and linear memory in C.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
