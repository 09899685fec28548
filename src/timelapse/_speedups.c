/* timelapse._speedups: the compiled twin of timelapse.snapshot.python_signature.
 *
 * What a signature is, and why it is safe to compare, is said in snapshot.py's docstring; the
 * Python function there is the specification.  This file follows it step by step: the same
 * words in the same order, the same objects appended to `keep` in the same order, None in the
 * same cases, an exception where the Python raises one.  Any difference is a bug here (or there),
 * and tests/test_speedups.py looks for one with random object graphs.
 *
 * The one rule beyond the Python's: nothing here may run Python code of the program.  The walk
 * runs in the middle of a monitoring callback, and the program must not see it.  So: exact types
 * only (no __len__, __iter__, __getitem__ of a subclass), no attribute lookup, no comparison and
 * no hashing of program objects (the path of open containers is a C array of addresses), no
 * iteration protocol (PyList_GET_ITEM, PyTuple_GET_ITEM, PyDict_Next on exact dicts).  The only
 * foreign code called is the C getter of an instance's fields (a getset or member descriptor's),
 * which is what the Python calls too.
 *
 * Shape: one function with an explicit stack of open containers, like the Python (the depth is at
 * most MAX_DEPTH, so the stack is a fixed array).  Words go to a C buffer, on the C stack until it
 * outgrows it, and become a bytes object once at the end.  No PyLong is made per element.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* These two must be snapshot.MAX_HELD_TEXT and snapshot.MAX_DEPTH: the module exports them so
   that a test can check it. */
#define MAX_HELD_TEXT   256
#define MAX_DEPTH       16

#define CYCLE           UINT64_MAX
#define SUMMARY         (UINT64_MAX - 1)

/* Limits beyond this (either way) behave as this: a value can't hold 2**62 elements, and the
   budget arithmetic below stays inside int64_t. */
#define LIMIT_CLAMP     ((int64_t)1 << 62)

/* How much lives on the C stack before the heap is needed: a few hundred elements, the usual. */
#define WORDS_INLINE    512
#define REFS_INLINE     64


/* -- The words: a growable buffer of uint64_t ------------------------------------------------- */

typedef struct {
    uint64_t *at;
    Py_ssize_t len;
    Py_ssize_t cap;
    uint64_t inline_words[WORDS_INLINE];
} Words;

static int
words_grow(Words *w)
{
    Py_ssize_t cap = w->cap * 2;
    uint64_t *at;
    if (w->at == w->inline_words) {
        at = PyMem_Malloc(cap * sizeof(uint64_t));
        if (at != NULL) {
            memcpy(at, w->inline_words, w->len * sizeof(uint64_t));
        }
    }
    else {
        at = PyMem_Realloc(w->at, cap * sizeof(uint64_t));
    }
    if (at == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->at = at;
    w->cap = cap;
    return 0;
}


/* -- The references held while the walk runs ----------------------------------------------------
 * Every container met is held (the Python's `alive`), so that no address is reused while the
 * walk runs: two containers at one address would be taken for one (CYCLE).  The fields dicts of
 * instances and the descriptors are held too: the getter may have made the dict.
 */

typedef struct {
    PyObject **at;
    Py_ssize_t len;
    Py_ssize_t cap;
    PyObject *inline_refs[REFS_INLINE];
} Refs;

/* Holds obj, a new reference the caller hands over (stolen, even on failure). */
static int
refs_take(Refs *r, PyObject *obj)
{
    if (r->len == r->cap) {
        Py_ssize_t cap = r->cap * 2;
        PyObject **at;
        if (r->at == r->inline_refs) {
            at = PyMem_Malloc(cap * sizeof(PyObject *));
            if (at != NULL) {
                memcpy(at, r->inline_refs, r->len * sizeof(PyObject *));
            }
        }
        else {
            at = PyMem_Realloc(r->at, cap * sizeof(PyObject *));
        }
        if (at == NULL) {
            Py_DECREF(obj);
            PyErr_NoMemory();
            return -1;
        }
        r->at = at;
        r->cap = cap;
    }
    r->at[r->len++] = obj;
    return 0;
}

static void
refs_release(Refs *r)
{
    /* Releasing may free an object whose deallocation runs Python code (a fields dict the getter
       made, holding an object with __del__): that is after the walk, as in the Python. */
    Py_ssize_t i;
    for (i = 0; i < r->len; i++) {
        Py_DECREF(r->at[i]);
    }
    if (r->at != r->inline_refs) {
        PyMem_Free(r->at);
    }
}


/* -- The open containers ----------------------------------------------------------------------- */

enum { KIND_LIST, KIND_TUPLE, KIND_DICT, KIND_OBJECT };

typedef struct {
    PyObject *container;    /* the list, tuple, dict or instance (held in Refs) */
    PyObject *items;        /* what the elements are read from: the container, or the fields dict */
    PyObject *value;        /* a dict: the value to give after the key just given */
    Py_ssize_t left;        /* elements still to give (a dict: pairs) */
    Py_ssize_t next;        /* a list or tuple: the index of the next; a dict: PyDict_Next's pos */
    int kind;
    int depth;
} Frame;

/* The next element of an open container, borrowed (its container holds it, and is held), or
   NULL when there is none left. */
static inline PyObject *
frame_next(Frame *f)
{
    PyObject *key, *value;
    switch (f->kind) {
    case KIND_LIST:
        /* Nothing runs that could change the list, but its size is checked all the same: a
           bound, not a snapshot, costs nothing. */
        if (f->left > 0 && f->next < PyList_GET_SIZE(f->items)) {
            f->left--;
            return PyList_GET_ITEM(f->items, f->next++);
        }
        return NULL;
    case KIND_TUPLE:
        if (f->left > 0) {
            f->left--;
            return PyTuple_GET_ITEM(f->items, f->next++);
        }
        return NULL;
    case KIND_DICT:
        /* key, value, key, value, ...: the Python's flattened items. */
        if (f->value != NULL) {
            value = f->value;
            f->value = NULL;
            return value;
        }
        if (f->left > 0 && PyDict_Next(f->items, &f->next, &key, &value)) {
            f->left--;
            f->value = value;
            return key;
        }
        return NULL;
    default:
        /* An instance: the names were written when it was opened, the values come now. */
        if (f->left > 0 && PyDict_Next(f->items, &f->next, &key, &value)) {
            f->left--;
            return value;
        }
        return NULL;
    }
}


/* -- An instance's fields ---------------------------------------------------------------------- */

/* The fields dict of obj read through descr, as descr.__get__(obj) does it (descr_check, then the
   C getter), or NULL with no error set when the Python would catch an exception (no signature),
   or NULL with an error set for one the Python would let through (not an Exception). */
static PyObject *
read_fields(PyObject *descr, PyObject *obj)
{
    PyObject *fields;
    PyTypeObject *descr_type = Py_TYPE(descr);

    if (descr_type == &PyGetSetDescr_Type) {
        PyGetSetDef *getset = ((PyGetSetDescrObject *)descr)->d_getset;
        if (!PyObject_TypeCheck(obj, PyDescr_TYPE(descr)) || getset->get == NULL) {
            return NULL;    /* TypeError, AttributeError in the Python */
        }
        fields = getset->get(obj, getset->closure);
    }
    else if (descr_type == &PyMemberDescr_Type) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (!PyObject_TypeCheck(obj, PyDescr_TYPE(descr))) {
            return NULL;
        }
        if (member->flags & Py_AUDIT_READ) {
            /* member_get would call the audit hooks, which are Python code: no signature.  The
               Python one calls them (the encoder never gives such a descriptor). */
            return NULL;
        }
        fields = PyMember_GetOne((const char *)obj, member);
    }
    else {
        /* Not a C descriptor: the Python would call its __get__, which is program code. */
        return NULL;
    }
    if (fields == NULL) {
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear();
        }
        return NULL;
    }
    return fields;
}


/* -- The signature ----------------------------------------------------------------------------- */

/* A limit as an int64_t, clamped (see LIMIT_CLAMP).  Only exact ints and their subclasses, read
   without __index__. */
static int
read_limit(PyObject *obj, const char *name, int64_t *limit)
{
    int overflow;
    long long value;
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "signature() %s must be an int, not %.100s",
                     name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0 || value > LIMIT_CLAMP) {
        value = LIMIT_CLAMP;
    }
    else if (overflow < 0 || value < -LIMIT_CLAMP) {
        value = -LIMIT_CLAMP;
    }
    *limit = value;
    return 0;
}

static const char * const arg_names[] = {
    "value", "objects", "max_depth", "items", "max_nodes", "keep", "outer",
};
#define N_ARGS 7
#define N_REQUIRED 6    /* outer is optional (None) */

/* items[d]: how many elements a container opened at depth d shows, read (and checked) the first
   time it is needed, as the Python reads it: an index or a type it never reaches is no error. */
static int
item_limit(PyObject *items, int depth, int64_t *limits, unsigned int *known, int64_t *limit)
{
    Py_ssize_t size = PyTuple_CheckExact(items) ? PyTuple_GET_SIZE(items) : PyList_GET_SIZE(items);
    PyObject *item;
    if (*known & (1u << depth)) {
        *limit = limits[depth];
        return 0;
    }
    if (depth >= size) {
        PyErr_SetString(PyExc_IndexError, "tuple index out of range");
        return -1;
    }
    item = PyTuple_CheckExact(items) ? PyTuple_GET_ITEM(items, depth) : PyList_GET_ITEM(items, depth);
    if (read_limit(item, "items[depth]", &limits[depth]) < 0) {
        return -1;
    }
    *known |= 1u << depth;
    *limit = limits[depth];
    return 0;
}

/* signature(value, objects, max_depth, items, max_nodes, keep, outer=None) -> bytes | None */
static PyObject *
signature(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *arg[N_ARGS] = {NULL};
    PyObject *value, *objects, *items_at, *keep, *outer;
    int64_t max_depth, max_nodes, left;
    /* items[d], as read so far (bit d of known says items[d] is in limits[d]). */
    int64_t limits[MAX_DEPTH + 1];
    unsigned int known = 0;

    Words words;
    Refs alive;
    /* The open containers, innermost last: also the Python's `path`, as it holds at most
       MAX_DEPTH containers a scan of it is as quick as a hash set. */
    Frame stack[MAX_DEPTH];
    int sp = 0;

    /* The last class found in `objects` and its descriptor (held): instances come in runs. */
    PyTypeObject *last_class = NULL;
    PyObject *last_descr = NULL;
    /* A negative element count was written: array('Q') refuses it at the end, after the walk. */
    int negative = 0;

    PyObject *x, *result = NULL;
    PyTypeObject *t;
    int depth;
    Py_ssize_t i;

    /* -- the arguments, by position or by name, as the Python function takes them -- */
    if (nargs > N_ARGS) {
        PyErr_Format(PyExc_TypeError, "signature() takes %d arguments (%zd given)", N_ARGS, nargs);
        return NULL;
    }
    for (i = 0; i < nargs; i++) {
        arg[i] = args[i];
    }
    if (kwnames != NULL) {
        Py_ssize_t k, n_kw = PyTuple_GET_SIZE(kwnames);
        for (k = 0; k < n_kw; k++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, k);
            int j;
            for (j = 0; j < N_ARGS; j++) {
                if (PyUnicode_CompareWithASCIIString(name, arg_names[j]) == 0) {
                    break;
                }
            }
            if (j == N_ARGS) {
                PyErr_Format(PyExc_TypeError, "signature() got an unexpected keyword argument '%U'",
                             name);
                return NULL;
            }
            if (arg[j] != NULL) {
                PyErr_Format(PyExc_TypeError, "signature() got multiple values for argument '%s'",
                             arg_names[j]);
                return NULL;
            }
            arg[j] = args[nargs + k];
        }
    }
    for (i = 0; i < N_REQUIRED; i++) {
        if (arg[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "signature() missing required argument '%s'", arg_names[i]);
            return NULL;
        }
    }
    value = arg[0];
    objects = arg[1];
    items_at = arg[3];
    keep = arg[5];
    outer = arg[6] == Py_None ? NULL : arg[6];
    /* Exact types: a subclass's get() or append() would be program code. */
    if (!PyDict_CheckExact(objects)) {
        PyErr_SetString(PyExc_TypeError, "signature() objects must be a dict");
        return NULL;
    }
    if (!PyTuple_CheckExact(items_at) && !PyList_CheckExact(items_at)) {
        PyErr_SetString(PyExc_TypeError, "signature() items must be a tuple");
        return NULL;
    }
    if (!PyList_CheckExact(keep)) {
        PyErr_SetString(PyExc_TypeError, "signature() keep must be a list");
        return NULL;
    }
    if (outer != NULL && !PyDict_CheckExact(outer)) {
        PyErr_SetString(PyExc_TypeError, "signature() outer must be a dict or None");
        return NULL;
    }
    if (read_limit(arg[2], "max_depth", &max_depth) < 0
        || read_limit(arg[4], "max_nodes", &max_nodes) < 0) {
        return NULL;
    }

    words.at = words.inline_words;
    words.len = 0;
    words.cap = WORDS_INLINE;
    alive.at = alive.inline_refs;
    alive.len = 0;
    alive.cap = REFS_INLINE;

#define PUT(word)                                                       \
    do {                                                                \
        if (words.len == words.cap && words_grow(&words) < 0) {         \
            goto error;                                                 \
        }                                                               \
        words.at[words.len++] = (uint64_t)(word);                       \
    } while (0)

#define HOLD(obj)                                                       \
    do {                                                                \
        if (PyList_Append(keep, (obj)) < 0) {                           \
            goto error;                                                 \
        }                                                               \
    } while (0)

#define ALIVE(obj)                                                      \
    do {                                                                \
        Py_INCREF(obj);                                                 \
        if (refs_take(&alive, (obj)) < 0) {                             \
            goto error;                                                 \
        }                                                               \
    } while (0)

    left = max_nodes;
    x = value;
    depth = 1;
    for (;;) {
        /* -- one element, x, at depth ------------------------------------------------------- */
        /* The value itself (depth 1) is always taken as a container: a scalar there is looked
           up in `objects` like any other type (and so has no signature). */
        t = Py_TYPE(x);
        if (depth > 1 && (t == &PyLong_Type || t == &PyFloat_Type || t == &PyBool_Type
                          || x == Py_None)) {
            if (t == &PyLong_Type) {
                /* Ints beyond 64 bits are not kept (their memory: snapshot.MAX_HELD_BITS). */
                int overflow;
                (void)PyLong_AsLongLongAndOverflow(x, &overflow);
                if (overflow) {
                    goto none;
                }
            }
            PUT((uintptr_t)x);
            HOLD(x);
        }
        else if (depth > 1 && (t == &PyUnicode_Type || t == &PyBytes_Type)) {
            Py_ssize_t length = t == &PyUnicode_Type ? PyUnicode_GET_LENGTH(x) : PyBytes_GET_SIZE(x);
            if (length > MAX_HELD_TEXT) {
                goto none;
            }
            PUT((uintptr_t)x);
            HOLD(x);
        }
        else {
            PyObject *descr = NULL;
            int kind, on_path = 0;
            if (t == &PyList_Type) {
                kind = KIND_LIST;
            }
            else if (t == &PyTuple_Type) {
                kind = KIND_TUPLE;
            }
            else if (t == &PyDict_Type) {
                kind = KIND_DICT;
            }
            else {
                kind = KIND_OBJECT;
                if (t == last_class) {
                    descr = last_descr;
                }
                else {
                    /* objects.get(id(t)): an int key hashes and compares without program code. */
                    PyObject *entry, *key = PyLong_FromVoidPtr(t);
                    if (key == NULL) {
                        goto error;
                    }
                    entry = PyDict_GetItemWithError(objects, key);
                    Py_DECREF(key);
                    if (entry == NULL) {
                        if (PyErr_Occurred()) {
                            goto error;
                        }
                        goto none;
                    }
                    if (entry == Py_None) {
                        goto none;
                    }
                    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 2) {
                        PyErr_SetString(PyExc_TypeError,
                                        "signature() objects values must be (class, descriptor)");
                        goto error;
                    }
                    if (PyTuple_GET_ITEM(entry, 0) != (PyObject *)t) {
                        goto none;
                    }
                    descr = PyTuple_GET_ITEM(entry, 1);
                    ALIVE(descr);
                    last_class = t;
                    last_descr = descr;
                }
            }
            PUT((uintptr_t)t);
            PUT((uintptr_t)x);
            for (i = 0; i < sp; i++) {
                if (stack[i].container == x) {
                    on_path = 1;
                    break;
                }
            }
            if (!on_path && outer != NULL && PyDict_GET_SIZE(outer) > 0) {
                /* The containers open above the value (keys: their ids, ints, hashed in C). */
                PyObject *address = PyLong_FromVoidPtr((void *)x);
                if (address == NULL) {
                    goto error;
                }
                on_path = PyDict_Contains(outer, address);
                Py_DECREF(address);
                if (on_path < 0) {
                    goto error;
                }
            }
            if (on_path) {
                PUT(CYCLE);
            }
            else if (depth > max_depth) {
                PUT(SUMMARY);
                PUT(kind == KIND_OBJECT ? 0 : kind == KIND_DICT ? PyDict_GET_SIZE(x) : Py_SIZE(x));
                ALIVE(x);
            }
            else if (depth > MAX_DEPTH) {
                goto none;
            }
            else {
                PyObject *items = x;
                int64_t total, limit, n;
                Frame *f;
                ALIVE(x);
                if (kind == KIND_OBJECT) {
                    items = read_fields(descr, x);
                    if (items == NULL) {
                        if (PyErr_Occurred()) {
                            goto error;
                        }
                        goto none;
                    }
                    if (refs_take(&alive, items) < 0) {
                        goto error;
                    }
                    if (!PyDict_CheckExact(items)) {
                        goto none;
                    }
                }
                total = kind == KIND_LIST || kind == KIND_TUPLE ? Py_SIZE(items)
                                                                : PyDict_GET_SIZE(items);
                /* items[0] is for the fields of instances, items[depth] for the rest. */
                if (item_limit(items_at, kind == KIND_OBJECT ? 0 : depth, limits, &known,
                               &limit) < 0) {
                    goto error;
                }
                /* All of them when only one would be left out: the walk never says "... 1 more". */
                n = total <= limit + 1 ? total : limit;
                if (n > left) {
                    n = left > 0 ? left : 0;
                }
                /* left -= n; n < 0 (a limit < 0) makes it grow: saturate, the Python's int
                   doesn't overflow (and with n < 0 the Python ends in an error anyway). */
                if (n < 0 && left > INT64_MAX + n) {
                    left = INT64_MAX;
                }
                else {
                    left -= n;
                }
                PUT(total);
                PUT(n);
                if (n < 0) {
                    negative = 1;
                }
                f = &stack[sp++];   /* path[key] = None */
                f->container = x;
                f->items = items;
                f->value = NULL;
                f->next = 0;
                f->kind = kind;
                f->depth = depth;
                if (kind == KIND_LIST || kind == KIND_TUPLE) {
                    /* x[:n]: a negative n counts from the end. */
                    f->left = n >= 0 ? n : (total + n > 0 ? total + n : 0);
                }
                else {
                    if (n < 0) {
                        PyErr_SetString(PyExc_ValueError,
                                        "Stop argument for islice() must be None or an integer: "
                                        "0 <= x <= sys.maxsize.");
                        goto error;
                    }
                    f->left = n;
                    if (kind == KIND_OBJECT) {
                        /* The names first, all of them, then the values as elements. */
                        Py_ssize_t pos = 0, k;
                        PyObject *name, *field;
                        for (k = 0; k < n && PyDict_Next(items, &pos, &name, &field); k++) {
                            if (!PyUnicode_CheckExact(name)) {
                                goto none;
                            }
                            PUT((uintptr_t)name);
                            HOLD(name);
                        }
                    }
                }
            }
        }
        /* -- the next element: the next one of the innermost open container, depth first ------ */
        for (;;) {
            Frame *f;
            if (sp == 0) {
                goto done;
            }
            f = &stack[sp - 1];
            x = frame_next(f);
            if (x != NULL) {
                depth = f->depth + 1;
                break;
            }
            sp--;   /* del path[key] */
        }
    }

done:
    if (negative) {
        PyErr_SetString(PyExc_OverflowError, "can't convert negative int to unsigned");
        goto error;
    }
    result = PyBytes_FromStringAndSize((const char *)words.at,
                                       words.len * (Py_ssize_t)sizeof(uint64_t));
    goto finish;
none:
    result = Py_NewRef(Py_None);
    goto finish;
error:
    result = NULL;
finish:
    if (words.at != words.inline_words) {
        PyMem_Free(words.at);
    }
    refs_release(&alive);
    return result;

#undef PUT
#undef HOLD
#undef ALIVE
}


/* -- The walk ----------------------------------------------------------------------------------
 *
 * The compiled twin of the commonest part of encoder._make_walk: a value made of exact lists,
 * tuples and dicts, instances spelled by their class's shape shortcut (TypeInfo.shape), and
 * scalars, spelled into one C buffer.  The Python walk is the specification (and what runs
 * when this gives up); tests/test_speedups.py and tests/test_encoder.py compare the two on random
 * values, limits and redaction.
 *
 * What it does is the Python's eager walk, step for step: each container charges the elements it
 * shows to the value's budget in depth-first order, the same cuts (items_at[depth], max_items,
 * "... N more" where the Python puts it), the same cycles (the containers open on the path), the
 * same summaries below max_depth.  Every call the Python walk makes into the encoder (encode_json
 * for a scalar not in its cache, classify for a new class, a leaf's handler, _more, _cycle,
 * _summary, _head, _pair_head) is made here too, in the same order: those register types, and
 * the order of Type events is part of the trace.  What it does not make are the calls that only
 * save work: the reuse of elements (equal signatures give equal bytes, docs/values.md "Reuse").
 *
 * It gives up (returns None, no error set) on anything else: a container of another family (a
 * set, a namedtuple, a subclass, ...), an instance whose fields do not fit its class's shape, a
 * secret's name as a dict key, an exception from any call.  Giving up is always safe: the
 * encoder's Python walk then encodes the value from the start, and what was done here (caches
 * filled, types registered) is what that walk does first too, in the same order; the wrapper puts
 * back the encoder's counters (errors, redactions).  An Exception (MemoryError too) makes it give
 * up, as the Python walk turns one into a record; what is not an Exception (KeyboardInterrupt,
 * SystemExit: a signal handler's, in a call to the encoder) goes through, as it would there.
 *
 * The program's code is never called: exact types only, dict look-ups only in the encoder's own
 * caches (keys: exact ints, floats, strs, None/True/False, whose hash and == are C), the fields of
 * an instance through its class's C getter (read_fields, as for signatures), identity for the
 * rest.  Every object used across a call into Python is held: the call could drop the encoder's
 * caches (classify empties them when full) or another thread could change the program's
 * containers (so their elements are copied out first, as the Python copies x[:n]).
 */

#define WALK_INLINE     4096
#define WALK_BAIL       1   /* gave up: the Python walk encodes the value */

/* The encoder's parts, read from the context tuple that encoder._make_walk builds: see CTX_*. */
enum {
    CTX_INFOS, CTX_CLASSIFY, CTX_INTS, CTX_STRS, CTX_FLOATS, CTX_CONSTANTS, CTX_KEYS, CTX_ENCODE,
    CTX_SPELL_KEY, CTX_MORES, CTX_MORE, CTX_CYCLE, CTX_SUMMARY, CTX_HEAD, CTX_PAIR_HEADS,
    CTX_PAIR_HEAD, CTX_ITEMS, CTX_MAX_ITEMS, CTX_MAX_DEPTH, CTX_MAX_NODES, CTX_SEP, CTX_SEQ_TAIL,
    CTX_TUPLE_TAIL, CTX_STRUCT_TAIL, CTX_INFO_TYPE, CTX_SLOTS, CTX_REDACTING, CTX_SUMMARIES,
    CTX_CYCLES, CTX_SIZE
};
/* The TypeInfo slots read (CTX_SLOTS: their member descriptors, in this order). */
enum { SLOT_TYPE, SLOT_FAMILY, SLOT_CONTAINER, SLOT_HANDLER, SLOT_HEAD, SLOT_SHAPE, SLOT_DESCR,
       SLOT_COUNT };
/* valuetypes.Family */
enum { FAMILY_LIST = 10, FAMILY_TUPLE = 11, FAMILY_DICT = 12, FAMILY_OBJECT = 13 };

typedef struct {
    PyObject **ctx;                 /* the context tuple's items (borrowed: the caller holds it) */
    PyTypeObject *info_type;
    Py_ssize_t slot[SLOT_COUNT];    /* offsets of TypeInfo's slots */
    Py_ssize_t max_items, max_depth;
    Py_ssize_t items[MAX_DEPTH + 2];
    int64_t left;                   /* the value's budget (the Python's state[0]) */
    int redacting;
    PyObject *path[MAX_DEPTH + 2];  /* the containers open (the Python's state[2]) */
    int sp;
    char *out;
    Py_ssize_t len, cap;
    char inline_out[WALK_INLINE];
} Walk;

static int
walk_grow(Walk *w, Py_ssize_t need)
{
    Py_ssize_t cap = w->cap;
    char *at;
    while (cap - w->len < need) {
        cap *= 2;
    }
    if (w->out == w->inline_out) {
        at = PyMem_Malloc(cap);
        if (at != NULL) {
            memcpy(at, w->inline_out, w->len);
        }
    }
    else {
        at = PyMem_Realloc(w->out, cap);
    }
    if (at == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->out = at;
    w->cap = cap;
    return 0;
}

static inline int
put_raw(Walk *w, const char *data, Py_ssize_t size)
{
    if (w->cap - w->len < size && walk_grow(w, size) < 0) {
        return -1;
    }
    memcpy(w->out + w->len, data, size);
    w->len += size;
    return 0;
}

/* Spelled bytes (the encoder's: exact bytes, or the walk gives up). */
static inline int
put_bytes(Walk *w, PyObject *data)
{
    if (!PyBytes_CheckExact(data)) {
        return WALK_BAIL;
    }
    return put_raw(w, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
}

/* After a failed call: give up on an Exception (the Python walk makes of it what it makes), let
   anything else through. */
static int
walk_failed(void)
{
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return WALK_BAIL;
    }
    return -1;
}

/* The bytes a call into the encoder gives, appended. */
static int
put_result(Walk *w, PyObject *result)
{
    int r;
    if (result == NULL) {
        return walk_failed();
    }
    r = put_bytes(w, result);
    Py_DECREF(result);
    return r;
}

/* A TypeInfo slot, borrowed (NULL if unset). */
static inline PyObject *
info_slot(Walk *w, PyObject *info, int slot)
{
    return *(PyObject **)((char *)info + w->slot[slot]);
}

/* cache.get(x) or fn(x): an exact scalar's record (Python: `int_get(x) or encode(x)`). */
static int
put_cached(Walk *w, PyObject *cache, PyObject *fn, PyObject *x)
{
    PyObject *data = PyDict_GetItemWithError(cache, x);    /* borrowed */
    if (data != NULL && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0) {
        return put_raw(w, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    }
    if (data == NULL && PyErr_Occurred()) {
        return walk_failed();
    }
    return put_result(w, PyObject_CallOneArg(fn, x));
}

/* The "... N more" marker, a new reference (Python: enc._more(count), cached by count), or NULL
   with an error set. */
static PyObject *
more_data(Walk *w, Py_ssize_t count)
{
    PyObject *key = PyLong_FromSsize_t(count), *data;
    if (key == NULL) {
        return NULL;
    }
    data = PyDict_GetItemWithError(w->ctx[CTX_MORES], key);
    if (data != NULL && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0) {
        Py_INCREF(data);
    }
    else if (data == NULL && PyErr_Occurred()) {
        data = NULL;
    }
    else {
        data = PyObject_CallOneArg(w->ctx[CTX_MORE], key);
    }
    Py_DECREF(key);
    return data;
}

/* The TypeInfo of class t, a new reference (Python: infos.get(id(t)), classify(t) when it is
   not there or is another class's), or NULL with an error set. */
static PyObject *
type_info(Walk *w, PyTypeObject *t)
{
    PyObject *key = PyLong_FromVoidPtr(t), *info;
    if (key == NULL) {
        return NULL;
    }
    info = PyDict_GetItemWithError(w->ctx[CTX_INFOS], key);
    Py_DECREF(key);
    if (info != NULL && Py_TYPE(info) == w->info_type
        && info_slot(w, info, SLOT_TYPE) == (PyObject *)t) {
        return Py_NewRef(info);
    }
    if (info == NULL && PyErr_Occurred()) {
        return NULL;
    }
    info = PyObject_CallOneArg(w->ctx[CTX_CLASSIFY], (PyObject *)t);
    if (info != NULL && Py_TYPE(info) != w->info_type) {
        Py_DECREF(info);
        PyErr_SetString(PyExc_TypeError, "classify() must give a TypeInfo");
        return NULL;
    }
    return info;
}

/* The spelled head of a list's, tuple's or dict's record (Python: info.head or enc._head(...)). */
static int
put_head(Walk *w, PyObject *info, int is_tuple)
{
    PyObject *head = info_slot(w, info, SLOT_HEAD);
    if (head != NULL && PyBytes_CheckExact(head) && PyBytes_GET_SIZE(head) > 0) {
        return put_raw(w, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head));
    }
    return put_result(w, PyObject_CallFunctionObjArgs(w->ctx[CTX_HEAD], info,
                                                      is_tuple ? Py_True : Py_False, NULL));
}

static int walk_element(Walk *w, PyObject *x, int depth);
static int walk_container(Walk *w, PyObject *x, PyObject *info, int depth);

/* How many of total elements to show, at most limit, charged to the budget (Python: reserve). */
static inline Py_ssize_t
walk_reserve(Walk *w, Py_ssize_t total, Py_ssize_t limit)
{
    Py_ssize_t n = total <= limit + 1 ? total : limit;  /* never "... 1 more": show the one */
    if (n > w->left) {
        n = w->left > 0 ? (Py_ssize_t)w->left : 0;
    }
    w->left -= n;
    return n;
}

#define WALK_CHECK(call)                \
    do {                                \
        r = (call);                     \
        if (r != 0) {                   \
            goto done;                  \
        }                               \
    } while (0)

/* An exact list or tuple at depth (Python: open_list). */
static int
walk_sequence(Walk *w, PyObject *x, PyObject *info, int depth, int is_tuple)
{
    Py_ssize_t total = Py_SIZE(x), n, i;
    PyObject *elements;
    PyObject *sep = w->ctx[CTX_SEP];
    int r;
    n = walk_reserve(w, total, w->items[depth]);
    /* Copied first (x[:n], one C call), as the Python does: a call below may let another thread
       change the list; a tuple can't change. */
    elements = is_tuple ? Py_NewRef(x) : PyList_GetSlice(x, 0, n);
    if (elements == NULL) {
        return -1;
    }
    WALK_CHECK(put_head(w, info, is_tuple));
    for (i = 0; i < n; i++) {
        if (i) {
            WALK_CHECK(put_bytes(w, sep));
        }
        WALK_CHECK(walk_element(w, is_tuple ? PyTuple_GET_ITEM(elements, i)
                                            : PyList_GET_ITEM(elements, i), depth));
    }
    if (n < total) {
        if (n) {
            WALK_CHECK(put_bytes(w, sep));
        }
        WALK_CHECK(put_result(w, more_data(w, total - n)));
    }
    r = put_bytes(w, w->ctx[is_tuple ? CTX_TUPLE_TAIL : CTX_SEQ_TAIL]);
done:
    Py_DECREF(elements);
    return r;
}

/* A dict key: as an element, but an exact str through the cache of keys decided not to be
   secrets' names (Python: `key_get(k) or spell_key(k)`; spell_key gives None for a secret's
   name, whose entry the Python spells its slower way: given up here). */
static int
walk_key(Walk *w, PyObject *k, int depth)
{
    PyObject *data, *result;
    int r;
    if (Py_TYPE(k) != &PyUnicode_Type) {
        if (w->redacting && Py_TYPE(k) == &PyBytes_Type) {
            return WALK_BAIL;   /* os.environ's b'GITHUB_TOKEN': a name, checked by the Python */
        }
        return walk_element(w, k, depth);
    }
    data = PyDict_GetItemWithError(w->ctx[CTX_KEYS], k);
    if (data != NULL && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0) {
        return put_raw(w, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    }
    if (data == NULL && PyErr_Occurred()) {
        return walk_failed();
    }
    result = PyObject_CallOneArg(w->ctx[CTX_SPELL_KEY], k);
    if (result == Py_None) {
        Py_DECREF(result);
        return WALK_BAIL;
    }
    r = put_result(w, result);
    return r;
}

/* An exact dict at depth: a Sequence of (key, value) Tuples (Python: entries). */
static int
walk_dict(Walk *w, PyObject *x, PyObject *info, int depth)
{
    Py_ssize_t total = PyDict_GET_SIZE(x), n, i = 0, pos = 0;
    PyObject *pairs, *k, *v, *pair = NULL, *more = NULL;
    PyObject *sep = w->ctx[CTX_SEP], *tail = w->ctx[CTX_TUPLE_TAIL];
    int r;
    n = walk_reserve(w, total, w->items[depth]);
    /* The first n entries copied out (key, value, key, value): nothing runs in between. */
    pairs = PyTuple_New(2 * n);
    if (pairs == NULL) {
        return -1;
    }
    while (i < n && PyDict_Next(x, &pos, &k, &v)) {
        PyTuple_SET_ITEM(pairs, 2 * i, Py_NewRef(k));
        PyTuple_SET_ITEM(pairs, 2 * i + 1, Py_NewRef(v));
        i++;
    }
    if (i < n) {    /* (cannot happen: the size was read just before) */
        r = WALK_BAIL;
        goto done;
    }
    /* In the Python's order: the head, the entries' Tuple head, the marker, then the entries. */
    WALK_CHECK(put_head(w, info, 0));
    pair = PyList_GET_ITEM(w->ctx[CTX_PAIR_HEADS], 0);
    if (PyBytes_CheckExact(pair) && PyBytes_GET_SIZE(pair) > 0) {
        Py_INCREF(pair);
    }
    else {
        pair = PyObject_CallNoArgs(w->ctx[CTX_PAIR_HEAD]);
        if (pair == NULL) {
            r = walk_failed();
            goto done;
        }
        if (!PyBytes_CheckExact(pair)) {
            r = WALK_BAIL;
            goto done;
        }
    }
    if (n < total) {
        /* Spelled now (it may register its type), written after the entries. */
        more = more_data(w, total - n);
        if (more == NULL) {
            r = walk_failed();
            goto done;
        }
    }
    for (i = 0; i < n; i++) {
        if (i) {
            WALK_CHECK(put_bytes(w, tail));
            WALK_CHECK(put_bytes(w, sep));
        }
        WALK_CHECK(put_bytes(w, pair));
        WALK_CHECK(walk_key(w, PyTuple_GET_ITEM(pairs, 2 * i), depth));
        WALK_CHECK(put_bytes(w, sep));
        WALK_CHECK(walk_element(w, PyTuple_GET_ITEM(pairs, 2 * i + 1), depth));
    }
    if (n) {
        WALK_CHECK(put_bytes(w, tail));
    }
    if (more != NULL) {
        if (n) {
            WALK_CHECK(put_bytes(w, sep));
        }
        WALK_CHECK(put_bytes(w, more));
    }
    r = put_bytes(w, w->ctx[CTX_SEQ_TAIL]);
done:
    Py_XDECREF(more);
    Py_XDECREF(pair);
    Py_DECREF(pairs);
    return r;
}

/* An instance at depth, by its class's shape shortcut (Python: the first branch of open_object
   and of open_element): its fields are exactly the names of the last instance spelled, the same
   name objects in the same order, nothing cut.  Anything else: given up. */
static int
walk_object(Walk *w, PyObject *x, PyObject *info, int depth)
{
    PyObject *shape = info_slot(w, info, SLOT_SHAPE), *descr = info_slot(w, info, SLOT_DESCR);
    PyObject *fields, *names, *values = NULL, *name, *field;
    Py_ssize_t n, i, pos = 0;
    int r;
    if (shape == NULL || !PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 2
        || descr == NULL || descr == Py_None) {
        return WALK_BAIL;
    }
    names = PyTuple_GET_ITEM(shape, 0);
    if (!PyTuple_CheckExact(names) || !PyBytes_CheckExact(PyTuple_GET_ITEM(shape, 1))) {
        return WALK_BAIL;
    }
    fields = read_fields(descr, x);
    if (fields == NULL) {
        return PyErr_Occurred() ? walk_failed() : WALK_BAIL;
    }
    if (!PyDict_CheckExact(fields)) {
        Py_DECREF(fields);
        return WALK_BAIL;
    }
    n = PyDict_GET_SIZE(fields);
    if (n != PyTuple_GET_SIZE(names) || n > w->left || n > w->max_items + 1) {
        Py_DECREF(fields);
        return WALK_BAIL;
    }
    Py_INCREF(shape);   /* a call below may give the class another shape */
    values = PyTuple_New(n);
    if (values == NULL) {
        r = -1;
        goto done;
    }
    for (i = 0; i < n && PyDict_Next(fields, &pos, &name, &field); i++) {
        if (name != PyTuple_GET_ITEM(names, i)) {
            r = WALK_BAIL;
            goto done;
        }
        PyTuple_SET_ITEM(values, i, Py_NewRef(field));
    }
    if (i < n) {
        r = WALK_BAIL;
        goto done;
    }
    w->left -= n;
    WALK_CHECK(put_bytes(w, PyTuple_GET_ITEM(shape, 1)));
    for (i = 0; i < n; i++) {
        if (i) {
            WALK_CHECK(put_bytes(w, w->ctx[CTX_SEP]));
        }
        WALK_CHECK(walk_element(w, PyTuple_GET_ITEM(values, i), depth));
    }
    r = put_bytes(w, w->ctx[CTX_STRUCT_TAIL]);
done:
    Py_XDECREF(values);
    Py_DECREF(shape);
    Py_DECREF(fields);
    return r;
}

/* Container x at depth, on the path while its elements are walked. */
static int
walk_container(Walk *w, PyObject *x, PyObject *info, int depth)
{
    PyObject *family_obj = info_slot(w, info, SLOT_FAMILY);
    long family;
    int r;
    if (family_obj == NULL || !PyLong_CheckExact(family_obj) || w->sp > MAX_DEPTH) {
        return WALK_BAIL;
    }
    family = PyLong_AsLong(family_obj);
    w->path[w->sp++] = x;
    if (family == FAMILY_OBJECT) {
        r = walk_object(w, x, info, depth);
    }
    else if (family == FAMILY_LIST && Py_TYPE(x) == &PyList_Type) {
        r = walk_sequence(w, x, info, depth, 0);
    }
    else if (family == FAMILY_TUPLE && Py_TYPE(x) == &PyTuple_Type) {
        r = walk_sequence(w, x, info, depth, 1);
    }
    else if (family == FAMILY_DICT && Py_TYPE(x) == &PyDict_Type) {
        r = walk_dict(w, x, info, depth);
    }
    else {
        r = WALK_BAIL;
    }
    w->sp--;
    return r;
}

/* A container below max_depth, as its summary (Python: enc._summary; cached by (info, size) for
   the families here, whose size is their length; the rest asks the Python). */
static int
put_summary(Walk *w, PyObject *x, PyObject *info)
{
    PyObject *family_obj = info_slot(w, info, SLOT_FAMILY), *key, *data;
    long family = family_obj != NULL && PyLong_CheckExact(family_obj) ? PyLong_AsLong(family_obj) : -1;
    Py_ssize_t size;
    if (family == FAMILY_OBJECT) {
        size = -1;
    }
    else if (family == FAMILY_LIST && Py_TYPE(x) == &PyList_Type) {
        size = PyList_GET_SIZE(x);
    }
    else if (family == FAMILY_TUPLE && Py_TYPE(x) == &PyTuple_Type) {
        size = PyTuple_GET_SIZE(x);
    }
    else if (family == FAMILY_DICT && Py_TYPE(x) == &PyDict_Type) {
        size = PyDict_GET_SIZE(x);
    }
    else {
        return put_result(w, PyObject_CallFunctionObjArgs(w->ctx[CTX_SUMMARY], x, info, NULL));
    }
    key = Py_BuildValue("(On)", info, size);
    if (key == NULL) {
        return -1;
    }
    /* A TypeInfo hashes and compares by identity (object's), a size as an int: no program code. */
    data = PyDict_GetItemWithError(w->ctx[CTX_SUMMARIES], key);
    Py_DECREF(key);
    if (data != NULL && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0) {
        return put_raw(w, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    }
    if (data == NULL && PyErr_Occurred()) {
        return walk_failed();
    }
    return put_result(w, PyObject_CallFunctionObjArgs(w->ctx[CTX_SUMMARY], x, info, NULL));
}

/* An element of a container at depth (Python: scalars, then child and open_element). */
static int
walk_element(Walk *w, PyObject *x, int depth)
{
    PyTypeObject *t = Py_TYPE(x);
    PyObject *info, *container;
    int r, i;
    if (t == &PyLong_Type) {
        return put_cached(w, w->ctx[CTX_INTS], w->ctx[CTX_ENCODE], x);
    }
    if (t == &PyUnicode_Type) {
        return put_cached(w, w->ctx[CTX_STRS], w->ctx[CTX_ENCODE], x);
    }
    if (t == &PyFloat_Type) {
        return put_cached(w, w->ctx[CTX_FLOATS], w->ctx[CTX_ENCODE], x);
    }
    if (t == &PyBool_Type || x == Py_None) {
        return put_cached(w, w->ctx[CTX_CONSTANTS], w->ctx[CTX_ENCODE], x);
    }
    info = type_info(w, t);
    if (info == NULL) {
        return walk_failed();
    }
    container = info_slot(w, info, SLOT_CONTAINER);
    if (container != Py_True) {
        /* A leaf: its handler (a failure there is the Python's to spell, as an Error). */
        PyObject *handler = info_slot(w, info, SLOT_HANDLER);
        if (container != Py_False || handler == NULL) {
            r = WALK_BAIL;
        }
        else {
            Py_INCREF(handler);     /* held while it runs */
            r = put_result(w, PyObject_CallFunctionObjArgs(handler, x, info, NULL));
            Py_DECREF(handler);
        }
        Py_DECREF(info);
        return r;
    }
    for (i = 0; i < w->sp; i++) {
        if (w->path[i] == x) {  /* on its own path: a cycle (Python: enc._cycle, cached) */
            PyObject *data = PyDict_GetItemWithError(w->ctx[CTX_CYCLES], info);
            if (data != NULL && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0) {
                r = put_raw(w, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
            }
            else if (data == NULL && PyErr_Occurred()) {
                r = walk_failed();
            }
            else {
                r = put_result(w, PyObject_CallOneArg(w->ctx[CTX_CYCLE], info));
            }
            Py_DECREF(info);
            return r;
        }
    }
    if (depth >= w->max_depth) {
        r = put_summary(w, x, info);
    }
    else {
        r = walk_container(w, x, info, depth + 1);
    }
    Py_DECREF(info);
    return r;
}

/* walk(context, value, info) -> bytes | None: value's record, or None (the Python walk's turn). */
static PyObject *
walk(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *context, *value, *info, *slots, *result = NULL;
    Py_ssize_t i, n_items;
    int64_t max_nodes, limit;
    int r;
    Walk *w;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "walk() takes 3 arguments (context, value, info)");
        return NULL;
    }
    context = args[0];
    value = args[1];
    info = args[2];
    if (!PyTuple_CheckExact(context) || PyTuple_GET_SIZE(context) != CTX_SIZE) {
        PyErr_SetString(PyExc_TypeError, "walk() context must be the encoder's tuple");
        return NULL;
    }
    w = PyMem_Malloc(sizeof(Walk));
    if (w == NULL) {
        return PyErr_NoMemory();
    }
    w->ctx = &PyTuple_GET_ITEM(context, 0);
    w->out = w->inline_out;
    w->len = 0;
    w->cap = WALK_INLINE;
    w->sp = 0;
    r = 0;
    if (!PyType_Check(w->ctx[CTX_INFO_TYPE]) || !PyTuple_CheckExact(w->ctx[CTX_SLOTS])
        || PyTuple_GET_SIZE(w->ctx[CTX_SLOTS]) != SLOT_COUNT
        || !PyTuple_CheckExact(w->ctx[CTX_ITEMS]) || !PyList_CheckExact(w->ctx[CTX_PAIR_HEADS])
        || PyList_GET_SIZE(w->ctx[CTX_PAIR_HEADS]) < 1) {
        PyErr_SetString(PyExc_TypeError, "walk() context is not the encoder's");
        goto finish;
    }
    w->info_type = (PyTypeObject *)w->ctx[CTX_INFO_TYPE];
    slots = w->ctx[CTX_SLOTS];
    for (i = 0; i < SLOT_COUNT; i++) {
        PyObject *descr = PyTuple_GET_ITEM(slots, i);
        PyMemberDef *member;
        if (Py_TYPE(descr) != &PyMemberDescr_Type) {
            PyErr_SetString(PyExc_TypeError, "walk() context: TypeInfo slots must be members");
            goto finish;
        }
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != Py_T_OBJECT_EX) {
            PyErr_SetString(PyExc_TypeError, "walk() context: TypeInfo slots must be objects");
            goto finish;
        }
        w->slot[i] = member->offset;
    }
    /* Every limit read clamped to LIMIT_CLAMP (2**62), as the signature's: no container holds that
       many elements, so a larger limit shows what a clamped one does, and `limit + 1` below can
       never overflow (an unclamped 2**63-1 did: a read past a list's end). */
    if (read_limit(w->ctx[CTX_MAX_ITEMS], "max_items", &limit) < 0) {
        goto finish;
    }
    w->max_items = (Py_ssize_t)limit;
    if (read_limit(w->ctx[CTX_MAX_DEPTH], "max_depth", &limit) < 0) {
        goto finish;
    }
    w->max_depth = (Py_ssize_t)limit;
    if (read_limit(w->ctx[CTX_MAX_NODES], "max_nodes", &max_nodes) < 0) {
        goto finish;
    }
    n_items = PyTuple_GET_SIZE(w->ctx[CTX_ITEMS]);
    /* Limits the walk does not take (they are validated before, this is a bound): the Python's. */
    if (w->max_depth < 1 || w->max_depth > MAX_DEPTH || w->max_items < 0
        || max_nodes < 0 || n_items < w->max_depth + 1) {
        result = Py_NewRef(Py_None);
        goto finish;
    }
    for (i = 0; i <= w->max_depth; i++) {
        if (read_limit(PyTuple_GET_ITEM(w->ctx[CTX_ITEMS], i), "items", &limit) < 0) {
            goto finish;
        }
        w->items[i] = (Py_ssize_t)limit;
        if (w->items[i] < 0) {
            result = Py_NewRef(Py_None);
            goto finish;
        }
    }
    w->left = max_nodes;
    w->redacting = PyObject_IsTrue(w->ctx[CTX_REDACTING]);
    if (Py_TYPE(info) != w->info_type || info_slot(w, info, SLOT_TYPE) != (PyObject *)Py_TYPE(value)) {
        result = Py_NewRef(Py_None);
        goto finish;
    }
    Py_INCREF(info);
    r = walk_container(w, value, info, 1);
    Py_DECREF(info);
    if (r == 0) {
        result = PyBytes_FromStringAndSize(w->out, w->len);
    }
    if (r == WALK_BAIL || (result == NULL && PyErr_ExceptionMatches(PyExc_Exception))) {
        PyErr_Clear();  /* (a MemoryError of the buffer, too: the Python walk's turn) */
        result = Py_NewRef(Py_None);
    }
finish:
    if (w->out != w->inline_out) {
        PyMem_Free(w->out);
    }
    PyMem_Free(w);
    return result;
}

#undef WALK_CHECK


/* -- The locals of a step ----------------------------------------------------------------------
 *
 * The loop monitor.py's on_line runs for every local of a function frame, at every step (hot: a
 * step of a method with a few scalar locals spends most of its time here).  Its specification is
 * the Python loop it replaces, which stays next to it as the fallback:
 *
 *     for name, value in f_locals.items():
 *         try: head = var_ids[name]
 *         except KeyError: head = new_variable(info, name)
 *         if head is not None:
 *             append(head + encode(value) + value_tail)
 *
 * with encode_json's first move done here: an exact int, str, float, bool or None found in the
 * encoder's caches is its record (what encode_json would return); anything else is given to
 * encode.  new_variable and encode are called in the Python's order, since they register
 * variables and types whose ids are in the bytes.
 *
 * No program code runs: the only keys hashed or compared are exact strs (f_locals' and var_ids'
 * keys are checked first: any other key, and the Python loop does the whole step, which is what
 * False means — nothing was appended then), values are only hashed when they are exact ints, strs
 * or floats (whose hash and equality are C), f_locals is an exact dict (3.12) or a
 * FrameLocalsProxy (3.13), whose items() is C.  Every reference taken from a container is owned
 * before encode or new_variable runs (they are Python: the garbage collector can run in them,
 * and with it a program's __del__).
 */

enum {
    LCTX_INTS, LCTX_STRS, LCTX_FLOATS, LCTX_CONSTANTS, LCTX_ENCODE, LCTX_NEW_VARIABLE, LCTX_EVENTS,
    LCTX_VALUE_TAIL, LCTX_SIZE
};

/* Are all keys of the exact dict d exact strs? */
static int
str_keys_only(PyObject *d)
{
    Py_ssize_t pos = 0;
    PyObject *key;
    while (PyDict_Next(d, &pos, &key, NULL)) {
        if (!PyUnicode_CheckExact(key)) {
            return 0;
        }
    }
    return 1;
}

/* head + record + tail, a new reference (Python's two `+`, in one allocation for bytes). */
static PyObject *
concat3(PyObject *head, PyObject *record, PyObject *tail)
{
    PyObject *result, *left;
    if (PyBytes_CheckExact(head) && PyBytes_CheckExact(record) && PyBytes_CheckExact(tail)) {
        Py_ssize_t a = PyBytes_GET_SIZE(head), b = PyBytes_GET_SIZE(record);
        Py_ssize_t c = PyBytes_GET_SIZE(tail);
        char *at;
        if (a > PY_SSIZE_T_MAX - b - c) {
            return PyErr_NoMemory();
        }
        result = PyBytes_FromStringAndSize(NULL, a + b + c);
        if (result == NULL) {
            return NULL;
        }
        at = PyBytes_AS_STRING(result);
        memcpy(at, PyBytes_AS_STRING(head), a);
        memcpy(at + a, PyBytes_AS_STRING(record), b);
        memcpy(at + a + b, PyBytes_AS_STRING(tail), c);
        return result;
    }
    left = PyNumber_Add(head, record);      /* what the Python does, whatever the types */
    if (left == NULL) {
        return NULL;
    }
    result = PyNumber_Add(left, tail);
    Py_DECREF(left);
    return result;
}

/* One local (name and value owned by the caller): its Value appended, if it is shown.  0, or -1
   with an exception set. */
static int
local_value(PyObject *const *ctx, PyObject *var_ids, PyObject *info, PyObject *name,
            PyObject *value)
{
    PyObject *head, *record, *cache, *event;
    PyTypeObject *t;
    int r;
    head = PyDict_GetItemWithError(var_ids, name);     /* borrowed; name is an exact str */
    if (head != NULL) {
        Py_INCREF(head);
    }
    else if (PyErr_Occurred()) {
        return -1;
    }
    else {
        head = PyObject_CallFunctionObjArgs(ctx[LCTX_NEW_VARIABLE], info, name, NULL);
        if (head == NULL) {
            return -1;
        }
    }
    if (head == Py_None) {
        Py_DECREF(head);
        return 0;
    }
    /* encode_json's own first move: exact scalars from its caches. */
    t = Py_TYPE(value);
    if (t == &PyLong_Type) {
        cache = ctx[LCTX_INTS];
    }
    else if (t == &PyUnicode_Type) {
        cache = ctx[LCTX_STRS];
    }
    else if (t == &PyFloat_Type) {
        cache = ctx[LCTX_FLOATS];
    }
    else if (value == Py_None || t == &PyBool_Type) {
        cache = ctx[LCTX_CONSTANTS];
    }
    else {
        cache = NULL;
    }
    record = cache != NULL ? PyDict_GetItemWithError(cache, value) : NULL;   /* borrowed */
    if (record != NULL) {
        Py_INCREF(record);
    }
    else if (PyErr_Occurred()) {
        Py_DECREF(head);
        return -1;
    }
    else {
        record = PyObject_CallOneArg(ctx[LCTX_ENCODE], value);
        if (record == NULL) {
            Py_DECREF(head);
            return -1;
        }
    }
    event = concat3(head, record, ctx[LCTX_VALUE_TAIL]);
    Py_DECREF(head);
    Py_DECREF(record);
    if (event == NULL) {
        return -1;
    }
    r = PyList_Append(ctx[LCTX_EVENTS], event);
    Py_DECREF(event);
    return r;
}

static PyObject *
locals_values(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *const *ctx;
    PyObject *context, *f_locals, *var_ids, *info, *name, *value;
    Py_ssize_t pos, used;
    int r = 0;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "locals_values() takes 4 arguments (context, f_locals, var_ids, info)");
        return NULL;
    }
    context = args[0];
    f_locals = args[1];
    var_ids = args[2];
    info = args[3];
    if (!PyTuple_CheckExact(context) || PyTuple_GET_SIZE(context) != LCTX_SIZE) {
        PyErr_SetString(PyExc_TypeError, "locals_values() context must be the encoder's tuple");
        return NULL;
    }
    ctx = &PyTuple_GET_ITEM(context, 0);
    if (!PyDict_CheckExact(ctx[LCTX_INTS]) || !PyDict_CheckExact(ctx[LCTX_STRS])
        || !PyDict_CheckExact(ctx[LCTX_FLOATS]) || !PyDict_CheckExact(ctx[LCTX_CONSTANTS])
        || !PyList_CheckExact(ctx[LCTX_EVENTS])) {
        PyErr_SetString(PyExc_TypeError, "locals_values() context is not the encoder's");
        return NULL;
    }
    /* A key that is not an exact str (a program's `locals()[k] = v`, 3.12; or one that a step
       of the Python loop gave new_variable) could run its __hash__ or __eq__: the Python's turn. */
    if (!PyDict_CheckExact(var_ids) || !str_keys_only(var_ids)) {
        Py_RETURN_FALSE;
    }
    if (PyDict_CheckExact(f_locals)) {
        if (!str_keys_only(f_locals)) {
            Py_RETURN_FALSE;
        }
        /* As the Python's `for ... in f_locals.items()`, whose iterator raises once the dict's
           size changed (a __del__ run by the collector could read the frame's locals again). */
        Py_INCREF(f_locals);
        used = PyDict_GET_SIZE(f_locals);
        pos = 0;
        for (;;) {
            if (PyDict_GET_SIZE(f_locals) != used) {
                PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
                r = -1;
                break;
            }
            if (!PyDict_Next(f_locals, &pos, &name, &value)) {
                break;
            }
            if (!PyUnicode_CheckExact(name)) {     /* put there meanwhile (see above) */
                PyErr_SetString(PyExc_RuntimeError, "dictionary keys changed during iteration");
                r = -1;
                break;
            }
            Py_INCREF(name);
            Py_INCREF(value);
            r = local_value(ctx, var_ids, info, name, value);
            Py_DECREF(name);
            Py_DECREF(value);
            if (r < 0) {
                break;
            }
        }
        Py_DECREF(f_locals);
    }
#if PY_VERSION_HEX >= 0x030D0000
    else if (PyFrameLocalsProxy_Check(f_locals)) {
        /* 3.13: items() is a list of (name, value) tuples, made in C, that we own. */
        PyObject *items = PyMapping_Items(f_locals);
        Py_ssize_t i, n;
        if (items == NULL) {
            return NULL;
        }
        n = PyList_GET_SIZE(items);
        for (i = 0; i < n; i++) {
            PyObject *item = PyList_GET_ITEM(items, i);
            if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 0))) {
                Py_DECREF(items);
                Py_RETURN_FALSE;
            }
        }
        for (i = 0; i < n; i++) {
            /* The list and its tuples are ours alone: nothing can take the items away. */
            PyObject *item = PyList_GET_ITEM(items, i);
            r = local_value(ctx, var_ids, info, PyTuple_GET_ITEM(item, 0),
                            PyTuple_GET_ITEM(item, 1));
            if (r < 0) {
                break;
            }
        }
        Py_DECREF(items);
    }
#endif
    else {
        Py_RETURN_FALSE;
    }
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}


/* -- The module -------------------------------------------------------------------------------- */

PyDoc_STRVAR(signature_doc,
"signature(value, objects, max_depth, items, max_nodes, keep) -> bytes | None\n\n"
"The compiled timelapse.snapshot.python_signature: the same bytes, the same objects\n"
"appended to keep, None in the same cases; it runs no Python code of the program.");

PyDoc_STRVAR(walk_doc,
"walk(context, value, info) -> bytes | None\n\n"
"The compiled part of timelapse.encoder's walk: value's record (a list, tuple, dict or\n"
"instance of the commonest kinds), or None where the Python walk must encode it.");

PyDoc_STRVAR(locals_values_doc,
"locals_values(context, f_locals, var_ids, info) -> bool\n\n"
"The Values of a function frame's locals at a step, appended to the events (monitor.py's\n"
"loop, in C): True, or False (nothing appended) where the Python loop must do it.");

static PyMethodDef speedups_methods[] = {
    {"signature", (PyCFunction)(void (*)(void))signature, METH_FASTCALL | METH_KEYWORDS,
     signature_doc},
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL, walk_doc},
    {"locals_values", (PyCFunction)(void (*)(void))locals_values, METH_FASTCALL, locals_values_doc},
    {NULL, NULL, 0, NULL}
};

static int
speedups_exec(PyObject *module)
{
    if (PyModule_AddIntConstant(module, "MAX_HELD_TEXT", MAX_HELD_TEXT) < 0
        || PyModule_AddIntConstant(module, "MAX_DEPTH", MAX_DEPTH) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    /* No module state, no static objects: fine in subinterpreters with their own GIL. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL}
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "timelapse._speedups",
    .m_doc = "Compiled helpers of timelapse's hot path (optional: timelapse works without them).",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
