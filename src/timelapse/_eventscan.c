/* timelapse._eventscan: find where the events of a trace stream end, without decoding them.
 *
 * Optional, like timelapse._speedups: reader.py uses it when it is built and TIMELAPSE_PURE is not
 * set, and decodes every event itself otherwise (the same events come out either way; the tests
 * compare the two).  It serves readers that skip one kind of event: `timelapse summary` never
 * looks at a Value, and Values are most of a trace's events and almost all of its bytes.  Decoding
 * a Value with cbor2 or json builds a dict per record only to drop it; here its end is found by
 * reading the heads (CBOR) or the brackets and strings (JSON), which costs a few nanoseconds a
 * byte, and only the other events' bytes are handed back, to be decoded by the same decoders as
 * always.
 *
 * Both functions stop, and say where, at anything they do not know for certain: the end of the
 * buffer inside an event (the caller reads more and asks again), or an event they do not handle
 * (malformed, too deep, a JSON number or literal): the caller decodes that one the ordinary way,
 * which raises the ordinary error if it is damaged.  An event that is skipped is not checked
 * beyond its structure: `timelapse check` is what validates a trace.
 *
 * No Python code runs here (only bytes and str are read, no object of the program exists in a
 * reader), every index is checked against the buffer's length, and the only references made are
 * the new bytes/str slices and the result tuple, owned by the caller.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 1024      /* deeper than any trace the recorder writes (reader._CBOR_DEPTH) */

enum { INCOMPLETE = -1, UNHANDLED = -2 };


/* -- CBOR (trace.bin) ------------------------------------------------------------------------ */

/* The end of the CBOR data item at buf[pos], or INCOMPLETE (the buffer ends inside it), or
 * UNHANDLED (not well-formed, or nested deeper than MAX_DEPTH). Iterative: `left` counts, for each
 * open container, the items it still needs (-1: indefinite, ends at a break). */
static Py_ssize_t
cbor_end(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos)
{
    int64_t left[MAX_DEPTH];
    int top = 0;
    for (;;) {
        if (pos >= len)
            return INCOMPLETE;
        unsigned int initial = buf[pos++];
        unsigned int major = initial >> 5, info = initial & 31;
        if (initial == 0xff) {                      /* break: closes an indefinite container */
            if (top == 0 || left[top - 1] != -1)
                return UNHANDLED;
            top--;
            goto item_done;
        }
        uint64_t arg = info;
        int indefinite = 0;
        if (info >= 24 && info <= 27) {
            Py_ssize_t size = (Py_ssize_t)1 << (info - 24);
            if (len - pos < size)
                return INCOMPLETE;
            arg = 0;
            for (Py_ssize_t k = 0; k < size; k++)
                arg = (arg << 8) | buf[pos + k];
            pos += size;
        }
        else if (info >= 28 && info <= 30) {
            return UNHANDLED;
        }
        else if (info == 31) {
            if (major < 2 || major == 6 || major == 7)
                return UNHANDLED;                   /* no indefinite length for these */
            indefinite = 1;
        }
        switch (major) {
        case 0: case 1: case 7:                     /* integers, simple values, floats */
            goto item_done;
        case 2: case 3:                             /* byte and text strings */
            if (indefinite)
                break;                              /* chunks follow, then a break */
            if (arg > (uint64_t)(len - pos))
                return INCOMPLETE;
            pos += (Py_ssize_t)arg;
            goto item_done;
        case 4: case 5:                             /* arrays and maps */
            if (!indefinite) {
                if (arg == 0)
                    goto item_done;
                /* Each item takes a byte at least: more than the buffer holds cannot end in it. */
                if (arg > (uint64_t)(len - pos))
                    return INCOMPLETE;
                if (major == 5)
                    arg *= 2;
            }
            break;
        case 6:                                     /* a tag: its item follows */
            continue;
        }
        if (top == MAX_DEPTH)
            return UNHANDLED;
        left[top++] = indefinite ? -1 : (int64_t)arg;
        continue;
    item_done:
        while (top > 0) {
            if (left[top - 1] == -1 || --left[top - 1] > 0)
                break;
            top--;                                  /* the container is complete: one item of its parent */
        }
        if (top == 0)
            return pos;
    }
}

/* Append one item to `events` (a new reference, or NULL: an error) and, if there are flags, its
 * flag to `flags` (True or False: no allocation). */
static int
keep(PyObject *events, PyObject *flags, PyObject *item, int flag)
{
    if (item == NULL)
        return -1;
    int failed = PyList_Append(events, item);
    Py_DECREF(item);
    if (failed == 0 && flags != NULL)
        failed = PyList_Append(flags, flag ? Py_True : Py_False);
    return failed;
}

/* Both CBOR functions: the items that start with `start` are counted, not returned (cbor_events);
 * or every item is returned, with a flag saying which start so (cbor_split, `split`). */
static PyObject *
cbor_scan(PyObject *const *args, Py_ssize_t nargs, int split)
{
    Py_buffer data, start;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, split ? "cbor_split(data, pos, start)" : "cbor_events(data, pos, skip)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &start, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *events = PyList_New(0), *flags = split ? PyList_New(0) : NULL;
    Py_ssize_t skipped = 0;
    const unsigned char *buf = data.buf;
    Py_ssize_t len = data.len;
    if (events == NULL || (split && flags == NULL))
        goto fail;
    if (pos < 0 || pos > len) {
        PyErr_SetString(PyExc_ValueError, "pos is outside the data");
        goto fail;
    }
    while (pos < len) {
        Py_ssize_t end = cbor_end(buf, len, pos);
        if (end < 0)
            break;
        int marked = start.len > 0 && end - pos >= start.len && memcmp(buf + pos, start.buf, start.len) == 0;
        if (marked && !split)
            skipped++;
        else if (keep(events, flags, PyBytes_FromStringAndSize((const char *)buf + pos, end - pos), marked) < 0)
            goto fail;
        pos = end;
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&start);
    return split ? Py_BuildValue("(NNn)", events, flags, pos) : Py_BuildValue("(Nnn)", events, skipped, pos);
fail:
    Py_XDECREF(events);
    Py_XDECREF(flags);
    PyBuffer_Release(&data);
    PyBuffer_Release(&start);
    return NULL;
}

PyDoc_STRVAR(cbor_events_doc,
"cbor_events(data, pos, skip) -> (events, skipped, end)\n\n"
"The CBOR data items of ``data`` from ``pos`` on, as long as each is whole and well-formed: the\n"
"bytes of each (``events``, a list), except the items whose bytes start with ``skip``, which are\n"
"only counted (``skipped``). ``end``: where the first item not returned starts (``len(data)`` if\n"
"none is left).");

static PyObject *
cbor_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return cbor_scan(args, nargs, 0);
}

PyDoc_STRVAR(cbor_split_doc,
"cbor_split(data, pos, start) -> (events, flags, end)\n\n"
"As cbor_events, but every whole item is returned, and ``flags[i]`` says whether ``events[i]``\n"
"starts with ``start``.");

static PyObject *
cbor_split(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return cbor_scan(args, nargs, 1);
}


/* -- JSON (trace.json) ----------------------------------------------------------------------- */

#define IS_SPACE(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')

static Py_ssize_t
skip_space(int kind, const void *text, Py_ssize_t len, Py_ssize_t pos)
{
    while (pos < len && IS_SPACE(PyUnicode_READ(kind, text, pos)))
        pos++;
    return pos;
}

/* The end of the string whose opening quote is at text[pos], or INCOMPLETE. */
static Py_ssize_t
string_end(int kind, const void *text, Py_ssize_t len, Py_ssize_t pos)
{
    for (pos++; pos < len; pos++) {
        Py_UCS4 c = PyUnicode_READ(kind, text, pos);
        if (c == '\\')
            pos++;                          /* the escaped character (checked by the loop's test) */
        else if (c == '"')
            return pos + 1;
    }
    return INCOMPLETE;
}

/* The end of the object, array or string at text[pos], or INCOMPLETE, or UNHANDLED (anything
 * else: a number or a literal, a closing bracket of the wrong kind, nesting deeper than MAX_DEPTH).
 * Brackets are matched in kind, strings skipped whole; the tokens between them are not read: an
 * event that is decoded is checked by the decoder, one that is skipped is not (see the top of this
 * file), but no bracket of a damaged event can end it early or late and take its neighbour along. */
static Py_ssize_t
value_end(int kind, const void *text, Py_ssize_t len, Py_ssize_t pos)
{
    Py_UCS4 c = PyUnicode_READ(kind, text, pos);
    if (c == '"')
        return string_end(kind, text, len, pos);
    if (c != '{' && c != '[')
        return UNHANDLED;
    char closing[MAX_DEPTH];        /* the bracket each open one wants */
    int depth = 0;
    while (pos < len) {
        c = PyUnicode_READ(kind, text, pos);
        if (c == '"') {
            pos = string_end(kind, text, len, pos);
            if (pos < 0)
                return INCOMPLETE;
            continue;
        }
        if (c == '{' || c == '[') {
            if (depth == MAX_DEPTH)
                return UNHANDLED;
            closing[depth++] = c == '{' ? '}' : ']';
        }
        else if (c == '}' || c == ']') {
            if (closing[--depth] != (char)c)
                return UNHANDLED;
            if (depth == 0)
                return pos + 1;
        }
        pos++;
    }
    return INCOMPLETE;
}

/* Whether the object text[pos:end] (its '{' to its '}') has one member, and `key` is its name. */
static int
is_one_member_object(int kind, const void *text, Py_ssize_t end, Py_ssize_t pos, PyObject *key)
{
    Py_ssize_t size = PyUnicode_GET_LENGTH(key);
    if (PyUnicode_READ(kind, text, pos) != '{')
        return 0;
    pos = skip_space(kind, text, end, pos + 1);
    if (pos >= end || PyUnicode_READ(kind, text, pos) != '"' || end - pos < size + 2)
        return 0;
    int key_kind = PyUnicode_KIND(key);
    const void *key_text = PyUnicode_DATA(key);
    for (Py_ssize_t k = 0; k < size; k++)
        if (PyUnicode_READ(kind, text, pos + 1 + k) != PyUnicode_READ(key_kind, key_text, k))
            return 0;
    if (PyUnicode_READ(kind, text, pos + 1 + size) != '"')
        return 0;
    pos = skip_space(kind, text, end, pos + 2 + size);
    if (pos >= end || PyUnicode_READ(kind, text, pos) != ':')
        return 0;
    pos = skip_space(kind, text, end, pos + 1);
    if (pos >= end)
        return 0;
    /* The member's value, then nothing but the closing brace (a number there: decoded instead). */
    Py_ssize_t value = value_end(kind, text, end, pos);
    if (value < 0)
        return 0;
    pos = skip_space(kind, text, end, value);
    return pos == end - 1;
}

/* Both JSON functions, as cbor_scan: `split` returns every element, with flags. */
static PyObject *
json_scan(PyObject *const *args, Py_ssize_t nargs, int split)
{
    if (nargs != 3 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, split ? "json_split(text: str, pos: int, key: str)"
                                               : "json_events(text: str, pos: int, key: str)");
        return NULL;
    }
    PyObject *source = args[0], *key = args[2];
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t len = PyUnicode_GET_LENGTH(source);
    if (pos < 0 || pos > len) {
        PyErr_SetString(PyExc_ValueError, "pos is outside the text");
        return NULL;
    }
    int kind = PyUnicode_KIND(source);
    const void *text = PyUnicode_DATA(source);
    PyObject *events = PyList_New(0), *flags = split ? PyList_New(0) : NULL;
    if (events == NULL || (split && flags == NULL))
        goto fail;
    Py_ssize_t skipped = 0;
    int closed = 0;
    for (;;) {
        Py_ssize_t start = skip_space(kind, text, len, pos);
        if (start >= len)
            break;                                  /* the next element is not in the text yet */
        Py_ssize_t end = value_end(kind, text, len, start);
        if (end < 0)
            break;
        Py_ssize_t after = skip_space(kind, text, len, end);
        if (after >= len)
            break;                                  /* is a ',' or the ']' next? not known yet */
        Py_UCS4 next = PyUnicode_READ(kind, text, after);
        if (next != ',' && next != ']')
            break;                                  /* damage: the ordinary decoding says what */
        int marked = is_one_member_object(kind, text, end, start, key);
        if (marked && !split)
            skipped++;
        else if (keep(events, flags, PyUnicode_Substring(source, start, end), marked) < 0)
            goto fail;
        if (next == ']') {
            pos = after;
            closed = 1;
            break;
        }
        pos = after + 1;
    }
    if (split)
        return Py_BuildValue("(NNnO)", events, flags, pos, closed ? Py_True : Py_False);
    return Py_BuildValue("(NnnO)", events, skipped, pos, closed ? Py_True : Py_False);
fail:
    Py_XDECREF(events);
    Py_XDECREF(flags);
    return NULL;
}

PyDoc_STRVAR(json_events_doc,
"json_events(text, pos, key) -> (events, skipped, end, closed)\n\n"
"The elements of a JSON array in ``text`` from ``pos`` on (where an element must be: after the\n"
"'[' of a non-empty array, or a ','), each with the ',' or ']' after it, as long as each is\n"
"whole and an object, array or string: the text of each (``events``), except the objects whose\n"
"one member is named ``key``, which are only counted (``skipped``). ``end``: where the first\n"
"element not returned starts, or where the ']' is; ``closed``: whether text[end] is that ']'.");

static PyObject *
json_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return json_scan(args, nargs, 0);
}

PyDoc_STRVAR(json_split_doc,
"json_split(text, pos, key) -> (events, flags, end, closed)\n\n"
"As json_events, but every whole element is returned, and ``flags[i]`` says whether ``events[i]``\n"
"is an object whose one member is named ``key``.");

static PyObject *
json_split(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return json_scan(args, nargs, 1);
}


static PyMethodDef eventscan_methods[] = {
    {"cbor_events", (PyCFunction)(void (*)(void))cbor_events, METH_FASTCALL, cbor_events_doc},
    {"json_events", (PyCFunction)(void (*)(void))json_events, METH_FASTCALL, json_events_doc},
    {"cbor_split", (PyCFunction)(void (*)(void))cbor_split, METH_FASTCALL, cbor_split_doc},
    {"json_split", (PyCFunction)(void (*)(void))json_split, METH_FASTCALL, json_split_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot eventscan_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef eventscan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "timelapse._eventscan",
    .m_doc = "Where the events of a trace stream end, without decoding them (reader.py).",
    .m_size = 0,
    .m_methods = eventscan_methods,
    .m_slots = eventscan_slots,
};

PyMODINIT_FUNC
PyInit__eventscan(void)
{
    return PyModuleDef_Init(&eventscan_module);
}
