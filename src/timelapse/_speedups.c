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


/* -- The module -------------------------------------------------------------------------------- */

PyDoc_STRVAR(signature_doc,
"signature(value, objects, max_depth, items, max_nodes, keep) -> bytes | None\n\n"
"The compiled timelapse.snapshot.python_signature: the same bytes, the same objects\n"
"appended to keep, None in the same cases; it runs no Python code of the program.");

static PyMethodDef speedups_methods[] = {
    {"signature", (PyCFunction)(void (*)(void))signature, METH_FASTCALL | METH_KEYWORDS,
     signature_doc},
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
