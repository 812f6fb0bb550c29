/* tblog._speedups: the sender's per-event loop for the common log record, compiled.
 *
 * Optional: tblog works without this module (``TBLOG_PURE_PYTHON=1`` at build or run time,
 * or no C compiler), and ``tblog._event.build`` holds the pure-Python reference of every step
 * here; tests hold the two to the same bytes.  On the caller's thread:
 *
 * ``snapshot(attrs, plain)``: the handler's snapshot of a common record (see
 * ``TinybirdLoggingHandler.emit``): ``attrs`` (the record's ``__dict__``) copied, a single plain
 * %-argument kept for the sender to merge, the context (``attrs[CTX_ATTR]``, else
 * ``context.capture()`` once OpenTelemetry's ``opentelemetry.trace`` is imported, else
 * ``context.current()``) and ``plain`` in the reused slots; returns ``(snapshot, size)``, or
 * ``(None, -1)`` for any other record (an exception, a message to merge now): the handler's
 * Python steps take it.
 * The snapshot is left to the garbage collector's blind side: nothing but the buffer refers
 * to it, so it can be in no reference cycle, and collections do not walk (and promote) the
 * records waiting in the buffer.
 *
 * On the sender thread:
 *
 * ``snapshot_sizes(snaps, exc_type, measure)``: ``sum(map(snapshot_size, snaps))`` (what the
 * channel subtracts for the snapshots it takes), ``measure(snap)`` for one that is not a dict
 * or carries an exception (of ``exc_type``).
 *
 * ``merge_messages(snaps, fallback)``: each snapshot's merged message (``msg % (arg,)`` for a
 * deferred plain argument), ``fallback(snap)`` for anything else.
 *
 * ``encode_lines(snaps, messages, flags, ctx)``: the NDJSON lines of the snapshots in chunks of
 * ``ctx.per_chunk`` lines joined by newlines, and how many lines there are: the loop of
 * ``EventBuilder.encode_batch``, step for step.  Where that loop calls the redactor or orjson on
 * something other than plain text and numbers, this one calls back: ``ctx.redact_text(message)``
 * for a flagged message, ``ctx.extra_json(extra, bound, secret)`` for an ``extra`` that is not plain
 * (bound or static fields, a secret's name, a value the redactor must see, another type).  A
 * snapshot that loop sends down the general path (an exception, a formatter, sampling, a line
 * over the size limit, a value orjson refuses) goes to ``ctx.fallback(snap)`` (bytes, or None:
 * no line), in its place; one this loop does not take on (a message or trace id that is not
 * text, a time given as an int or out of its range) to ``ctx.python_line(snap, message, flag)``,
 * the Python loop for that one snapshot.  Either happens before an event id is drawn, or after
 * it where the Python loop draws one too: both loops draw the same ids.  ``ctx`` is the builder's state for one batch
 * (``tblog._event.build._Batch``).
 *
 * Nothing here keeps state between calls: the caches (heads, extra key lists) are the builder's
 * Python dicts.  Runs on the sender thread with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* -- a growable byte buffer ------------------------------------------------------------- */

typedef struct {
    char *p;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_grow(Buf *b, Py_ssize_t need) {
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need) {
        cap *= 2;
    }
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (b->len + n > b->cap && buf_grow(b, n) < 0) {
        return -1;
    }
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT_LIT(b, s) buf_put((b), (s), (Py_ssize_t)(sizeof(s) - 1))

static const char HEX[] = "0123456789abcdef";

/* ``s`` as a JSON string, escaped as orjson escapes it.  -1 with an exception set (lone
 * surrogates have no UTF-8), or on no memory. */
static int put_json_str(Buf *b, PyObject *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u == NULL) {
        return -1;
    }
    if (b->len + n + 2 > b->cap && buf_grow(b, n + 2) < 0) {
        return -1;
    }
    b->p[b->len++] = '"';
    Py_ssize_t run = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        if (buf_put(b, u + run, i - run) < 0) {
            return -1;
        }
        run = i + 1;
        char esc[6];
        Py_ssize_t k = 2;
        esc[0] = '\\';
        switch (c) {
            case '"': esc[1] = '"'; break;
            case '\\': esc[1] = '\\'; break;
            case '\b': esc[1] = 'b'; break;
            case '\t': esc[1] = 't'; break;
            case '\n': esc[1] = 'n'; break;
            case '\f': esc[1] = 'f'; break;
            case '\r': esc[1] = 'r'; break;
            default:
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = HEX[c >> 4];
                esc[5] = HEX[c & 15];
                k = 6;
        }
        if (buf_put(b, esc, k) < 0) {
            return -1;
        }
    }
    if (buf_put(b, u + run, n - run) < 0) {
        return -1;
    }
    return PUT_LIT(b, "\"");
}

/* -- interned names ---------------------------------------------------------------------- */

static PyObject *S_exc_info, *S_stack_info, *S_created, *S_exc_text, *S_msg, *S_args;
static PyObject *S_fallback, *S_heads, *S_new_head, *S_extras, *S_new_extras, *S_second;
static PyObject *S_id_prefix, *S_id_counter, *S_limit, *S_per_chunk;
static PyObject *S_redact, *S_static, *S_value_json, *S_rate_key, *S_shape_keys;
static PyObject *S_extra_json, *S_redact_text, *S_python_line;

static int intern_all(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(S_exc_info, "exc_info");
    INTERN(S_stack_info, "stack_info");
    INTERN(S_created, "created");
    INTERN(S_exc_text, "exc_text");
    INTERN(S_msg, "msg");
    INTERN(S_args, "args");
    INTERN(S_fallback, "fallback");
    INTERN(S_heads, "heads");
    INTERN(S_new_head, "new_head");
    INTERN(S_extras, "extras");
    INTERN(S_new_extras, "new_extras");
    INTERN(S_second, "second");
    INTERN(S_id_prefix, "id_prefix");
    INTERN(S_id_counter, "id_counter");
    INTERN(S_limit, "limit");
    INTERN(S_per_chunk, "per_chunk");
    INTERN(S_redact, "redact");
    INTERN(S_static, "static");
    INTERN(S_value_json, "value_json");
    INTERN(S_rate_key, "rate_key");
    INTERN(S_shape_keys, "shape_keys");
    INTERN(S_extra_json, "extra_json");
    INTERN(S_redact_text, "redact_text");
    INTERN(S_python_line, "python_line");
#undef INTERN
    return 0;
}

/* -- snapshot ---------------------------------------------------------------------------- */

static PyObject *CTX_ATTR = NULL, *CURRENT = NULL, *CAPTURE = NULL, *MODULES = NULL;
static PyObject *OTEL = NULL;
static Py_ssize_t SNAP_OVERHEAD = 0, SNAP_BASE = 0;

static PyObject *FMT_KEY = NULL; /* the snapshot's formatter-output key */

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *ctx_attr, *fmt_key, *current, *capture, *modules, *otel;
    Py_ssize_t overhead, base;
    if (!PyArg_ParseTuple(args, "UnnUOOO!U", &ctx_attr, &overhead, &base, &fmt_key, &current,
                          &capture, &PyDict_Type, &modules, &otel)) {
        return NULL;
    }
    Py_INCREF(current);
    Py_XSETREF(CURRENT, current);
    Py_INCREF(capture);
    Py_XSETREF(CAPTURE, capture);
    Py_INCREF(modules);
    Py_XSETREF(MODULES, modules);
    Py_INCREF(otel);
    Py_XSETREF(OTEL, otel);
    Py_INCREF(ctx_attr);
    Py_XSETREF(CTX_ATTR, ctx_attr);
    Py_INCREF(fmt_key);
    Py_XSETREF(FMT_KEY, fmt_key);
    SNAP_OVERHEAD = overhead;
    SNAP_BASE = base;
    Py_RETURN_NONE;
}

static int deferrable(PyObject *arg);

static PyObject *snapshot(PyObject *self, PyObject *const *argv, Py_ssize_t argc) {
    if (argc != 2 || !PyDict_Check(argv[0]) || CTX_ATTR == NULL) {
        PyErr_SetString(PyExc_TypeError, "snapshot(attrs: dict, plain), once configured");
        return NULL;
    }
    PyObject *attrs = argv[0];
    PyObject *slots[2] = {S_exc_info, S_exc_text}; /* ``not exc_info and not exc_text`` */
    for (int k = 0; k < 2; k++) {
        PyObject *v = PyDict_GetItemWithError(attrs, slots[k]);
        int truth = v != NULL ? PyObject_IsTrue(v) : (PyErr_Occurred() ? -1 : 1);
        if (truth != 0) {
            return truth < 0 ? NULL : Py_BuildValue("(On)", Py_None, (Py_ssize_t)-1);
        }
    }
    /* A str message with no argument, or one plain argument, the sender merges later; any
     * other record (and one lacking ``msg`` or ``args``) is the Python steps'. */
    PyObject *msg = PyDict_GetItemWithError(attrs, S_msg);
    PyObject *args = msg != NULL ? PyDict_GetItemWithError(attrs, S_args) : NULL;
    PyObject *arg = NULL; /* the deferred argument (borrowed), or NULL: none */
    int merge_later = 0;
    if (args != NULL && PyUnicode_CheckExact(msg)) {
        if (args == Py_None) {
            merge_later = 1;
        } else if (PyTuple_CheckExact(args)) {
            Py_ssize_t n = PyTuple_GET_SIZE(args);
            arg = n == 1 ? PyTuple_GET_ITEM(args, 0) : NULL;
            merge_later = n == 0 || (arg != NULL && deferrable(arg));
        }
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!merge_later) {
        return Py_BuildValue("(On)", Py_None, (Py_ssize_t)-1);
    }
    PyObject *snap = PyDict_Copy(attrs); /* runs no code of the application's */
    if (snap == NULL) {
        return NULL;
    }
    Py_ssize_t size = SNAP_OVERHEAD + PyUnicode_GET_LENGTH(msg);
    if (arg != NULL && PyUnicode_CheckExact(arg)) {
        size += PyUnicode_GET_LENGTH(arg);
    }
    Py_XINCREF(arg); /* ``args`` goes from the snapshot now */
    int rc = PyDict_SetItem(snap, S_args, arg != NULL ? arg : Py_None);
    Py_XDECREF(arg);
    if (rc < 0) {
        Py_DECREF(snap);
        return NULL;
    }
    PyObject *ctx = PyDict_GetItemWithError(snap, CTX_ATTR);
    int otel = 0;
    if (ctx != NULL && ctx != Py_None) {
        Py_INCREF(ctx);
    } else if (PyErr_Occurred() || (otel = PyDict_Contains(MODULES, OTEL)) < 0 ||
               (ctx = PyObject_CallNoArgs(otel ? CAPTURE : CURRENT)) == NULL) {
        Py_DECREF(snap);
        return NULL;
    }
    rc = PyDict_SetItem(snap, S_exc_text, ctx);
    Py_DECREF(ctx);
    if (rc < 0 || PyDict_SetItem(snap, S_exc_info, argv[1]) < 0) {
        Py_DECREF(snap);
        return NULL;
    }
    size += 100 * (PyDict_GET_SIZE(snap) - SNAP_BASE);
    if (PyObject_GC_IsTracked(snap)) {
        PyObject_GC_UnTrack(snap);
    }
    return Py_BuildValue("(Nn)", snap, size);
}

/* -- snapshot_sizes --------------------------------------------------------------------- */


static PyObject *snapshot_sizes(PyObject *self, PyObject *const *argv, Py_ssize_t argc) {
    if (argc != 3 || !PyList_CheckExact(argv[0]) || FMT_KEY == NULL) {
        PyErr_SetString(PyExc_TypeError, "snapshot_sizes(snaps: list, exc_type, measure)");
        return NULL;
    }
    PyObject *snaps = argv[0], *exc_type = argv[1], *measure = argv[2];
    long long total = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(snaps); i++) {
        PyObject *a = PyList_GET_ITEM(snaps, i);
        PyObject *exc = PyDict_CheckExact(a) ? PyDict_GetItemWithError(a, S_exc_info) : NULL;
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (!PyDict_CheckExact(a) || (exc != NULL && (PyObject *)Py_TYPE(exc) == exc_type)) {
            PyObject *one = PyObject_CallOneArg(measure, a);
            if (one == NULL) {
                return NULL;
            }
            long long n = PyLong_AsLongLong(one);
            Py_DECREF(one);
            if (n == -1 && PyErr_Occurred()) {
                return NULL;
            }
            total += n;
            continue;
        }
        long long size = SNAP_OVERHEAD + 100 * (long long)(PyDict_GET_SIZE(a) - SNAP_BASE);
        PyObject *keys[3] = {S_msg, S_args, FMT_KEY};
        for (int k = 0; k < 3; k++) {
            PyObject *v = PyDict_GetItemWithError(a, keys[k]);
            if (v != NULL && PyUnicode_CheckExact(v)) {
                size += PyUnicode_GET_LENGTH(v);
            } else if (v == NULL && PyErr_Occurred()) {
                return NULL;
            }
        }
        total += size;
    }
    return PyLong_FromLongLong(total);
}

/* -- merge_messages ---------------------------------------------------------------------- */

static int deferrable(PyObject *arg) {
    return PyUnicode_CheckExact(arg) || PyLong_CheckExact(arg) || PyFloat_CheckExact(arg) ||
           PyBool_Check(arg);
}

static PyObject *merge_messages(PyObject *self, PyObject *const *argv, Py_ssize_t argc) {
    if (argc != 2 || !PyList_CheckExact(argv[0])) {
        PyErr_SetString(PyExc_TypeError, "merge_messages(snaps: list, fallback)");
        return NULL;
    }
    PyObject *snaps = argv[0], *fallback = argv[1];
    Py_ssize_t n = PyList_GET_SIZE(snaps);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyList_GET_ITEM(snaps, i);
        PyObject *merged = NULL;
        if (PyDict_CheckExact(a)) {
            PyObject *msg = PyDict_GetItemWithError(a, S_msg);
            PyObject *arg = msg != NULL ? PyDict_GetItemWithError(a, S_args) : NULL;
            if (PyErr_Occurred()) {
                PyErr_Clear();
            } else if (msg != NULL && PyUnicode_CheckExact(msg)) {
                if (arg == NULL || arg == Py_None) {
                    Py_INCREF(msg);
                    merged = msg;
                } else if (deferrable(arg)) {
                    PyObject *one = PyTuple_Pack(1, arg);
                    if (one == NULL) {
                        Py_DECREF(out);
                        return NULL;
                    }
                    merged = PyUnicode_Format(msg, one);
                    Py_DECREF(one);
                    if (merged == NULL) {
                        PyErr_Clear(); /* the fallback says what went wrong, as Python does */
                    }
                }
            }
        }
        if (merged == NULL) {
            merged = PyObject_CallOneArg(fallback, a);
            if (merged == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyList_SET_ITEM(out, i, merged);
    }
    return out;
}

/* -- encode_lines ------------------------------------------------------------------------ */

#define NSHAPE 11

typedef struct {
    PyObject *fallback, *heads, *new_head, *extras, *new_extras, *second, *id_prefix;
    PyObject *id_counter, *value_json, *rate_key, *shape_keys, *extra_json;
    PyObject *redact_text, *static_fields, *python_line;
    Py_ssize_t limit, per_chunk;
    int redact, has_static;
} Ctx;

static PyObject *ctx_get(PyObject *ctx, PyObject *name) {
    PyObject *v = PyObject_GetAttr(ctx, name);
    if (v != NULL) {
        Py_DECREF(v); /* borrowed from here on: ctx holds it for the call */
    }
    return v;
}

static int ctx_load(Ctx *c, PyObject *ctx) {
    PyObject *v;
#define GET(field, name) if ((c->field = ctx_get(ctx, name)) == NULL) return -1
    GET(fallback, S_fallback);
    GET(heads, S_heads);
    GET(new_head, S_new_head);
    GET(extras, S_extras);
    GET(new_extras, S_new_extras);
    GET(second, S_second);
    GET(id_prefix, S_id_prefix);
    GET(id_counter, S_id_counter);
    GET(value_json, S_value_json);
    GET(rate_key, S_rate_key);
    GET(shape_keys, S_shape_keys);
    GET(extra_json, S_extra_json);
    GET(redact_text, S_redact_text);
    GET(static_fields, S_static);
    GET(python_line, S_python_line);
#undef GET
    if (!PyDict_CheckExact(c->heads) || !PyDict_CheckExact(c->extras) ||
        !PyUnicode_CheckExact(c->id_prefix) || !PyTuple_CheckExact(c->shape_keys) ||
        !PyUnicode_IS_ASCII(c->id_prefix) || !PyDict_CheckExact(c->static_fields) ||
        PyTuple_GET_SIZE(c->shape_keys) != NSHAPE) {
        PyErr_SetString(PyExc_TypeError, "encode_lines: a malformed batch context");
        return -1;
    }
#define GETN(field, name) \
    if ((v = ctx_get(ctx, name)) == NULL) return -1; \
    c->field = PyLong_AsSsize_t(v); \
    if (c->field == -1 && PyErr_Occurred()) return -1
    GETN(limit, S_limit);
    GETN(per_chunk, S_per_chunk);
#undef GETN
    if ((v = ctx_get(ctx, S_redact)) == NULL || (c->redact = PyObject_IsTrue(v)) < 0) {
        return -1;
    }
    c->has_static = PyDict_GET_SIZE(c->static_fields) > 0;
    if (FMT_KEY == NULL) {
        PyErr_SetString(PyExc_TypeError, "encode_lines: configure() first");
        return -1;
    }
    if (c->per_chunk < 1) {
        PyErr_SetString(PyExc_ValueError, "encode_lines: per_chunk must be >= 1");
        return -1;
    }
    return 0;
}

/* State carried from one snapshot to the next within a call. */
typedef struct {
    PyObject *shape[NSHAPE]; /* the last head's field values (strong references) */
    PyObject *head;          /* its bytes: '{"level":...,"pathname":"..."' (strong) */
    PyObject *names;         /* the last snapshot's attribute names, a tuple (strong) */
    PyObject *keys;          /* its extra keys, a tuple (strong) */
    int secret;              /* one of them names a secret */
    long long last_ms, last_sec;
    char second[40];         /* "YYYY-MM-DDTHH:MM:SS." of last_sec */
    Py_ssize_t second_len;
} Loop;

static void loop_clear(Loop *s) {
    for (int k = 0; k < NSHAPE; k++) {
        Py_CLEAR(s->shape[k]);
    }
    Py_CLEAR(s->head);
    Py_CLEAR(s->names);
    Py_CLEAR(s->keys);
}

static long long floordiv(long long a, long long b) {
    long long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* 0 when ``obj`` is bytes; else ``obj`` is released and -1 returned with a TypeError. */
static int not_bytes(PyObject *obj, const char *what) {
    if (PyBytes_CheckExact(obj)) {
        return 0;
    }
    Py_DECREF(obj);
    PyErr_Format(PyExc_TypeError, "encode_lines: %s must be bytes", what);
    return -1;
}

/* ``cache[key]``, else ``make(first, key)`` (``make(key)`` without ``first``), which caches it:
 * a new reference, or NULL with an exception set. */
static PyObject *cached_or_made(PyObject *cache, PyObject *key, PyObject *make, PyObject *first) {
    PyObject *found = PyDict_GetItemWithError(cache, key);
    if (found != NULL) {
        Py_INCREF(found);
        return found;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return first != NULL ? PyObject_CallFunctionObjArgs(make, first, key, NULL)
                         : PyObject_CallOneArg(make, key);
}

/* 1: the head is in s->head; 0: this snapshot is not for this loop; -1: an error. */
static int find_head(Loop *s, const Ctx *c, PyObject *a) {
    PyObject *vals[NSHAPE];
    int same = s->head != NULL;
    for (int k = 0; k < NSHAPE; k++) {
        vals[k] = PyDict_GetItemWithError(a, PyTuple_GET_ITEM(c->shape_keys, k));
        if (vals[k] == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        if (same && vals[k] != s->shape[k]) {
            int eq = PyObject_RichCompareBool(vals[k], s->shape[k], Py_EQ);
            if (eq < 0) {
                return -1;
            }
            /* equal, and of the same type: 1 and 1.0 and True are one key of the cache */
            same = eq && Py_TYPE(vals[k]) == Py_TYPE(s->shape[k]);
        }
    }
    if (same) {
        return 1;
    }
    PyObject *shape = PyTuple_New(NSHAPE);
    if (shape == NULL) {
        return -1;
    }
    for (int k = 0; k < NSHAPE; k++) {
        Py_INCREF(vals[k]);
        PyTuple_SET_ITEM(shape, k, vals[k]);
    }
    PyObject *head = cached_or_made(c->heads, shape, c->new_head, a);
    Py_DECREF(shape);
    if (head == NULL || not_bytes(head, "a head")) {
        return -1;
    }
    Py_XSETREF(s->head, head);
    for (int k = 0; k < NSHAPE; k++) {
        Py_INCREF(vals[k]);
        Py_XSETREF(s->shape[k], vals[k]);
    }
    return 1;
}

/* The extra keys of ``a`` in s->keys (a snapshot with the last one's names reuses them).
 * 1: found; -1: an error. */
static int find_keys(Loop *s, const Ctx *c, PyObject *a) {
    Py_ssize_t n = PyDict_GET_SIZE(a);
    if (s->names != NULL && PyTuple_GET_SIZE(s->names) == n) {
        Py_ssize_t pos = 0, j = 0;
        PyObject *key, *value;
        int same = 1;
        while (PyDict_Next(a, &pos, &key, &value)) {
            PyObject *had = PyTuple_GET_ITEM(s->names, j++);
            if (key != had) {
                int eq = PyObject_RichCompareBool(key, had, Py_EQ);
                if (eq < 0) {
                    return -1;
                }
                if (!eq) {
                    same = 0;
                    break;
                }
            }
        }
        if (same) {
            return 1;
        }
    }
    PyObject *names = PyTuple_New(n);
    if (names == NULL) {
        return -1;
    }
    Py_ssize_t pos = 0, j = 0;
    PyObject *key, *value;
    while (PyDict_Next(a, &pos, &key, &value) && j < n) {
        Py_INCREF(key);
        PyTuple_SET_ITEM(names, j++, key);
    }
    PyObject *found = cached_or_made(c->extras, names, c->new_extras, NULL);
    if (found == NULL) {
        Py_DECREF(names);
        return -1;
    }
    if (!PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 2 ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(found, 0))) {
        Py_DECREF(found);
        Py_DECREF(names);
        PyErr_SetString(PyExc_TypeError, "encode_lines: extras must be (keys, secret)");
        return -1;
    }
    int secret = PyObject_IsTrue(PyTuple_GET_ITEM(found, 1));
    if (secret < 0) {
        Py_DECREF(found);
        Py_DECREF(names);
        return -1;
    }
    PyObject *keys = PyTuple_GET_ITEM(found, 0);
    Py_INCREF(keys);
    Py_DECREF(found);
    Py_XSETREF(s->names, names);
    Py_XSETREF(s->keys, keys);
    s->secret = secret;
    return 1;
}

/* The decimal digits of ``u`` at the end of ``out`` (24 bytes); returns where they start. */
static char *digits_of(unsigned long long u, char *out) {
    char *p = out + 24;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    return p;
}

/* One plain value of ``extra``: 1 written; 0 not plain (``extra_json`` writes this extra);
 * -1 an error.  Plain: what the loop in Python hands orjson without the redactor's look
 * (``_SCALARS``, and text under 8 characters when redacting) and orjson writes as C does. */
static int put_value(Buf *b, const Ctx *c, PyObject *v) {
    if (PyUnicode_CheckExact(v)) {
        if (c->redact && PyUnicode_GET_LENGTH(v) >= 8) {
            return 0;
        }
        if (put_json_str(b, v) < 0) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeError)) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        return 1;
    }
    if (v == Py_None) {
        return PUT_LIT(b, "null") < 0 ? -1 : 1;
    }
    if (v == Py_True) {
        return PUT_LIT(b, "true") < 0 ? -1 : 1;
    }
    if (v == Py_False) {
        return PUT_LIT(b, "false") < 0 ? -1 : 1;
    }
    char digits[24];
    char *p;
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!overflow) {
            p = digits_of(x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x, digits);
            if (x < 0) {
                *--p = '-';
            }
        } else {
            unsigned long long u = overflow > 0 ? PyLong_AsUnsignedLongLong(v) : 0;
            if (overflow < 0 || (u == (unsigned long long)-1 && PyErr_Occurred())) {
                PyErr_Clear();
                return 0; /* outside what orjson writes: extra_json raises, the general path */
            }
            p = digits_of(u, digits);
        }
        return buf_put(b, p, digits + 24 - p) < 0 ? -1 : 1;
    }
    if (PyFloat_CheckExact(v)) {
        PyObject *text = PyObject_CallOneArg(c->value_json, v);
        if (text == NULL) {
            return -1;
        }
        int rc = PyBytes_CheckExact(text)
                     ? buf_put(b, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
                     : 0;
        int plain = PyBytes_CheckExact(text);
        Py_DECREF(text);
        return rc < 0 ? -1 : plain;
    }
    return 0;
}

/* ``{k: a[k] for k in keys}`` written as JSON: 1 written; 0 an extra that is not plain
 * (nothing written); -1 an error (a missing key: KeyError, as in Python). */
static int put_plain_extra(Buf *b, const Ctx *c, PyObject *a, PyObject *keys) {
    Py_ssize_t start = b->len, nk = keys != NULL ? PyTuple_GET_SIZE(keys) : 0;
    if (PUT_LIT(b, "{") < 0) {
        return -1;
    }
    for (Py_ssize_t k = 0; k < nk; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k);
        PyObject *value = PyDict_GetItemWithError(a, key);
        if (value == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetObject(PyExc_KeyError, key);
            }
            return -1;
        }
        if (!PyUnicode_CheckExact(key)) {
            b->len = start;
            return 0;
        }
        if ((k > 0 && PUT_LIT(b, ",") < 0)) {
            return -1;
        }
        if (put_json_str(b, key) < 0) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeError)) {
                PyErr_Clear();
                b->len = start;
                return 0;
            }
            return -1;
        }
        if (PUT_LIT(b, ":") < 0) {
            return -1;
        }
        int w = put_value(b, c, value);
        if (w <= 0) {
            b->len = start;
            return w;
        }
    }
    return PUT_LIT(b, "}") < 0 ? -1 : 1;
}

/* ``extra_json({k: a[k] for k in keys}, bound, secret)`` appended. */
static int put_extra_json(Buf *b, const Ctx *c, PyObject *a, PyObject *keys, PyObject *bound,
                          int secret) {
    PyObject *extra = PyDict_New();
    if (extra == NULL) {
        return -1;
    }
    Py_ssize_t nk = keys != NULL ? PyTuple_GET_SIZE(keys) : 0;
    for (Py_ssize_t k = 0; k < nk; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys, k);
        PyObject *value = PyObject_GetItem(a, key);
        if (value == NULL || PyDict_SetItem(extra, key, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(extra);
            return -1;
        }
        Py_DECREF(value);
    }
    PyObject *text = PyObject_CallFunctionObjArgs(c->extra_json, extra, bound,
                                                  secret ? Py_True : Py_False, NULL);
    Py_DECREF(extra);
    if (text == NULL || not_bytes(text, "extra_json()")) {
        return -1;
    }
    int rc = buf_put(b, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text));
    Py_DECREF(text);
    return rc;
}

/* The line of ``a`` appended to ``b``: 1 written; 0 the general path's (``b`` unchanged);
 * 2 the Python loop's; -1 an error (the general path's too: the caller clears it). */
static int put_line(Buf *b, Loop *s, const Ctx *c, PyObject *a, PyObject *message, int flagged) {
    if (!PyDict_CheckExact(a)) {
        return 0;
    }
    if (!PyUnicode_Check(message)) {
        return 2;
    }
    PyObject *exc_info = PyDict_GetItemWithError(a, S_exc_info);
    PyObject *stack_info = exc_info ? PyDict_GetItemWithError(a, S_stack_info) : NULL;
    PyObject *created = stack_info ? PyDict_GetItemWithError(a, S_created) : NULL;
    PyObject *ctx = created ? PyDict_GetItemWithError(a, S_exc_text) : NULL;
    if (ctx == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (exc_info != Py_None || stack_info != Py_None) {
        int t1 = PyObject_IsTrue(exc_info);
        int t2 = t1 == 0 ? PyObject_IsTrue(stack_info) : 0;
        if (t1 != 0 || t2 != 0) {
            return (t1 < 0 || t2 < 0) ? -1 : 0;
        }
    }
    int has = PyDict_Contains(a, FMT_KEY);
    if (has != 0) {
        return has < 0 ? -1 : 0;
    }
    if (!PyTuple_CheckExact(ctx) || PyTuple_GET_SIZE(ctx) != 3) {
        return 0;
    }
    PyObject *trace_id = PyTuple_GET_ITEM(ctx, 0), *span_id = PyTuple_GET_ITEM(ctx, 1);
    if (!PyUnicode_Check(trace_id) || !PyUnicode_Check(span_id)) {
        return 2;
    }
    int bound = PyObject_IsTrue(PyTuple_GET_ITEM(ctx, 2));
    if (bound < 0) {
        return -1;
    }
    if (!PyFloat_CheckExact(created)) {
        return 2;
    }
    double scaled = PyFloat_AS_DOUBLE(created) * 1000000.0 + 0.5;
    if (!isfinite(scaled)) {
        return 0; /* int() refuses it before an id is drawn: the general path */
    }
    if (fabs(scaled) >= 9.2e18) {
        return 2; /* past a long long */
    }
    long long micros = (long long)scaled; /* as int(): towards zero (exact: an integral double) */
    int r = find_head(s, c, a);
    if (r <= 0) {
        return r;
    }
    PyObject *keys = NULL;
    int secret = 0;
    if (PyDict_GET_SIZE(a) != SNAP_BASE) { /* a plain record's attributes: no extras */
        has = PyDict_Contains(a, c->rate_key);
        if (has != 0) {
            return has < 0 ? -1 : 0; /* kept by sampling: its row has a sample_rate */
        }
        if (find_keys(s, c, a) < 0) {
            return -1;
        }
        keys = s->keys;
        secret = s->secret;
    }
    long long ms = floordiv(micros, 1000);
    if (ms != s->last_ms) {
        long long sec = floordiv(ms, 1000);
        if (sec != s->last_sec) {
            PyObject *text = PyObject_CallFunction(c->second, "L", sec);
            if (text == NULL) {
                return -1;
            }
            Py_ssize_t n = 0;
            const char *u = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
            if (u == NULL || n >= (Py_ssize_t)sizeof(s->second)) {
                Py_DECREF(text);
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_ValueError, "encode_lines: an odd timestamp");
                }
                return -1;
            }
            memcpy(s->second, u, (size_t)n);
            s->second_len = n;
            Py_DECREF(text);
            s->last_sec = sec;
        }
        s->last_ms = ms;
    }
    PyObject *number = PyIter_Next(c->id_counter);
    if (number == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "encode_lines: the id counter ended");
        }
        return -1;
    }
    unsigned long long id = PyLong_AsUnsignedLongLongMask(number);
    Py_DECREF(number);
    if (id == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *redacted = NULL;
    if (flagged) {
        redacted = PyObject_CallOneArg(c->redact_text, message);
        if (redacted == NULL) {
            return -1;
        }
        if (!PyUnicode_Check(redacted)) {
            Py_DECREF(redacted);
            return 0;
        }
        message = redacted;
    }
    Py_ssize_t start = b->len, plen = 0;
    const char *prefix = PyUnicode_AsUTF8AndSize(c->id_prefix, &plen);
    PyObject *head = s->head;
    long long sub = micros - ms * 1000, milli = ms - floordiv(ms, 1000) * 1000;
    char ts[8] = {(char)('0' + milli / 100), (char)('0' + milli / 10 % 10),
                  (char)('0' + milli % 10), (char)('0' + sub / 100), (char)('0' + sub / 10 % 10),
                  (char)('0' + sub % 10), 'Z', '"'};
    char eid[12 + 2];
    for (int k = 11; k >= 0; k--) {
        eid[k] = HEX[(id >> (4 * (11 - k))) & 15];
    }
    eid[12] = '"';
    eid[13] = ',';
    int rc = prefix == NULL ? -1 : 0;
#define THEN(step) if (rc == 0) rc = (step)
    THEN(buf_put(b, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head)));
    THEN(PUT_LIT(b, ",\"timestamp\":\""));
    THEN(buf_put(b, s->second, s->second_len));
    THEN(buf_put(b, ts, 8));
    THEN(PUT_LIT(b, ",\"message\":"));
    THEN(put_json_str(b, message));
    THEN(PUT_LIT(b, ",\"trace_id\":"));
    THEN(put_json_str(b, trace_id));
    THEN(PUT_LIT(b, ",\"span_id\":"));
    THEN(put_json_str(b, span_id));
    THEN(PUT_LIT(b, ",\"event_id\":\""));
    THEN(buf_put(b, prefix, plen));
    THEN(buf_put(b, eid, 14));
    THEN(PUT_LIT(b, "\"extra\":"));
#undef THEN
    Py_XDECREF(redacted);
    if (rc == 0) {
        int w = 0;
        if (!(bound || c->has_static || (secret && c->redact))) {
            w = put_plain_extra(b, c, a, keys);
        }
        if (w == 0) {
            w = put_extra_json(b, c, a, keys, PyTuple_GET_ITEM(ctx, 2), secret) < 0 ? -1 : 1;
        }
        rc = w < 0 ? -1 : 0;
    }
    if (rc == 0) {
        rc = PUT_LIT(b, "}");
    }
    if (rc < 0) {
        b->len = start;
        return -1;
    }
    if (b->len - start > c->limit) {
        b->len = start; /* shrunk by the general path */
        return 0;
    }
    return 1;
}

static PyObject *chunk_bytes(Buf *b) {
    PyObject *chunk = PyBytes_FromStringAndSize(b->p, b->len);
    b->len = 0;
    return chunk;
}

static PyObject *encode_lines(PyObject *self, PyObject *const *argv, Py_ssize_t argc) {
    if (argc != 4 || !PyList_CheckExact(argv[0]) || !PyList_CheckExact(argv[1]) ||
        PyList_GET_SIZE(argv[0]) != PyList_GET_SIZE(argv[1]) ||
        (argv[2] != Py_None &&
         (!PyList_CheckExact(argv[2]) || PyList_GET_SIZE(argv[2]) != PyList_GET_SIZE(argv[0])))) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_lines(snaps: list, messages: list, flags: list | None, ctx)");
        return NULL;
    }
    PyObject *snaps = argv[0], *messages = argv[1], *flags = argv[2];
    Ctx c;
    if (ctx_load(&c, argv[3]) < 0) {
        return NULL;
    }
    Py_INCREF(argv[3]); /* keeps what Ctx borrows alive, whatever a callback does */
    Loop s;
    memset(&s, 0, sizeof s);
    s.last_ms = s.last_sec = LLONG_MIN;
    Buf b = {NULL, 0, 0};
    PyObject *parts = PyList_New(0);
    Py_ssize_t count = 0, in_chunk = 0, n = PyList_GET_SIZE(snaps);
    if (parts == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyList_GET_ITEM(snaps, i);
        Py_INCREF(a); /* a callback may change the list */
        int flagged = 0;
        if (flags != Py_None) {
            flagged = PyObject_IsTrue(PyList_GET_ITEM(flags, i));
            if (flagged < 0) {
                Py_DECREF(a);
                goto error;
            }
        }
        Py_ssize_t mark = b.len;
        if (in_chunk && PUT_LIT(&b, "\n") < 0) {
            Py_DECREF(a);
            goto error;
        }
        PyObject *message = PyList_GET_ITEM(messages, i);
        int r = put_line(&b, &s, &c, a, message, flagged);
        if (r < 0) {
            /* an error where the Python loop raises too: its general path copes */
            PyErr_Clear();
            r = 0;
        }
        if (r != 1) {
            PyObject *line = r == 0 ? PyObject_CallOneArg(c.fallback, a)
                                    : PyObject_CallFunctionObjArgs(
                                          c.python_line, a, message,
                                          flags == Py_None ? Py_None : PyList_GET_ITEM(flags, i),
                                          NULL);
            if (line == NULL) {
                Py_DECREF(a);
                goto error;
            }
            if (line == Py_None) {
                b.len = mark; /* no line: no separator either */
                Py_DECREF(line);
                Py_DECREF(a);
                continue;
            }
            if (!PyBytes_CheckExact(line)) {
                Py_DECREF(line);
                Py_DECREF(a);
                PyErr_SetString(PyExc_TypeError, "encode_lines: fallback must give bytes or None");
                goto error;
            }
            int rc = buf_put(&b, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line));
            Py_DECREF(line);
            if (rc < 0) {
                Py_DECREF(a);
                goto error;
            }
        }
        Py_DECREF(a);
        count++;
        if (++in_chunk == c.per_chunk) {
            PyObject *chunk = chunk_bytes(&b);
            if (chunk == NULL || PyList_Append(parts, chunk) < 0) {
                Py_XDECREF(chunk);
                goto error;
            }
            Py_DECREF(chunk);
            in_chunk = 0;
        }
    }
    if (in_chunk) {
        PyObject *chunk = chunk_bytes(&b);
        if (chunk == NULL || PyList_Append(parts, chunk) < 0) {
            Py_XDECREF(chunk);
            goto error;
        }
        Py_DECREF(chunk);
    }
    loop_clear(&s);
    PyMem_Free(b.p);
    Py_DECREF(argv[3]);
    PyObject *result = Py_BuildValue("(Nn)", parts, count);
    return result;
error:
    loop_clear(&s);
    PyMem_Free(b.p);
    Py_XDECREF(parts);
    Py_DECREF(argv[3]);
    return NULL;
}

static PyMethodDef speedups_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(ctx_attr, overhead, base_attrs, fmt_key, current, capture, modules, otel)"},
    {"snapshot_sizes", (PyCFunction)(void (*)(void))snapshot_sizes, METH_FASTCALL,
     "snapshot_sizes(snaps, exc_type, measure) -> int"},
    {"snapshot", (PyCFunction)(void (*)(void))snapshot, METH_FASTCALL,
     "snapshot(attrs, plain) -> (snapshot, size)"},
    {"merge_messages", (PyCFunction)(void (*)(void))merge_messages, METH_FASTCALL,
     "merge_messages(snaps, fallback) -> list[str]"},
    {"encode_lines", (PyCFunction)(void (*)(void))encode_lines, METH_FASTCALL,
     "encode_lines(snaps, messages, flags, ctx) -> (chunks, count)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "tblog._speedups", "tblog's optional compiled steps.", -1,
    speedups_methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (intern_all() < 0) {
        return NULL;
    }
    return PyModule_Create(&speedups_module);
}
