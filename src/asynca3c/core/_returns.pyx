# cython: language_level=3
"""Compiled return kernels: streaming n-step returns, and V-trace targets of segments.

Per environment the kernel keeps the rewards of the open window (at most n
transitions) and emits a sample as soon as its return is known: when the window
is full, or for every transition in the window when the episode ends.

Exactness: the seed's O(1) update ``R = (R + r*gamma**n) / gamma`` divides by
gamma every step and so multiplies its rounding error by 1/gamma per step. Here
the window is split in two parts, like a queue built from two stacks: older
rewards ("front") hold suffix sums computed by a backward Horner pass, newer
rewards ("back") a forward weighted sum. A window's return is
``front_suffix + gamma**len(front) * back_sum``: only additions and
multiplications by powers of gamma <= 1, so the error stays at a few ulps
whatever the episode length, and each reward is touched a constant number of
times (O(1) amortized).

Indices: every environment counts its own steps (one per push that includes
it, masked or not). A sample starting at step ``start`` with a window of k
steps bootstraps from the observation returned by step ``start + k - 1``,
reported as ``boot = start + k`` (the index of the observation, counting the
reset observation as 0).
"""


from libc.math cimport exp, isfinite

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memset

import numpy as np

from asynca3c.checks import check_kernel_size

cimport numpy as cnp

cnp.import_array()

def as_float_array(x, str name):
    """x as a contiguous 1-D float64 array, refusing casts that lose information."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {a.shape}")
    if not np.can_cast(a.dtype, np.float64, "safe"):
        raise TypeError(f"{name} must be float64 or a dtype that casts to it safely "
                        f"(float32, integers), got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float64)


def as_flag_array(x, str name):
    """x as a contiguous 1-D bool array; integers are accepted when they are 0 or 1."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.dtype != np.bool_ and a.size:  # an empty list arrives as float64; nothing to cast
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be bool (or integers 0/1), got dtype {a.dtype}")
        if (a.min() < 0 or a.max() > 1):
            raise ValueError(f"{name} must hold only 0 or 1, got values in [{a.min()}, {a.max()}]")
    return np.ascontiguousarray(a, dtype=np.bool_)


cdef enum:
    OK = 0
    ERR_NONFINITE = 1
    ERR_MASKED_OPEN = 2


cdef struct EnvState:
    long long step        # steps taken by this env (masked ones included)
    long long wstart      # step index of the oldest transition in the window
    long long front_end   # steps < front_end have suffix sums in suf
    Py_ssize_t count      # transitions in the window (0..n)
    Py_ssize_t back_len   # transitions after front_end
    double back_sum       # sum of gamma**i * r over the back part


cdef inline bint _is_array(object x, int typenum, Py_ssize_t length):
    """True when x is a contiguous 1-D numpy array of that dtype and length."""
    if not cnp.PyArray_Check(x):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>x
    return (cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_TYPE(a) == typenum
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_DIMS(a)[0] == length)


cdef cnp.ndarray _checked(object x, int typenum, Py_ssize_t length, str name):
    """x unchanged when it is already right, else a safe cast with a clear error."""
    if _is_array(x, typenum, length):
        return <cnp.ndarray>x
    a = as_float_array(x, name) if typenum == cnp.NPY_DOUBLE else as_flag_array(x, name)
    if a.shape[0] != length:
        raise ValueError(f"{name} must have length num_envs={length}, got {a.shape[0]}")
    return a


cdef class NStepKernel:
    """Streaming n-step returns for a batch of environments.

    ``push`` (a batch of environments, one transition each) and ``push_one``
    (one environment) record transitions and return how many samples were
    emitted; the samples are in the first ``count`` rows of ``env``, ``start``,
    ``boot``, ``returns`` and ``discounts``, valid until the next call.
    """

    cdef readonly Py_ssize_t num_envs
    cdef readonly Py_ssize_t n
    cdef readonly double gamma
    cdef readonly cnp.ndarray env, start, boot, returns, discounts

    cdef Py_ssize_t _mask      # ring size - 1; the ring size is a power of two >= n
    cdef Py_ssize_t _ring
    cdef EnvState* _st
    cdef double* _rew          # num_envs x ring rewards
    cdef double* _suf          # num_envs x ring suffix sums of the front part
    cdef double* _pow          # gamma**0 .. gamma**n
    cdef long long* _o_env
    cdef long long* _o_start
    cdef long long* _o_boot
    cdef double* _o_ret
    cdef double* _o_disc
    cdef Py_ssize_t _bad_env
    cdef double _bad_reward

    def __cinit__(self, num_envs, n, double gamma):
        # Sizes are checked (with Python integers, which cannot overflow) before anything is allocated.
        num_envs, n = check_kernel_size(num_envs, n)
        if not (0.0 <= gamma <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        self.num_envs, self.n, self.gamma = num_envs, n, gamma
        self._ring = 1
        while self._ring < self.n:
            self._ring *= 2
        self._mask = self._ring - 1
        cdef Py_ssize_t E = self.num_envs, cells = self.num_envs * self._ring, i
        self._st = <EnvState*>PyMem_Malloc(E * sizeof(EnvState))
        self._rew = <double*>PyMem_Malloc(cells * sizeof(double))
        self._suf = <double*>PyMem_Malloc(cells * sizeof(double))
        self._pow = <double*>PyMem_Malloc((self.n + 1) * sizeof(double))
        if not (self._st and self._rew and self._suf and self._pow):
            raise MemoryError()
        memset(self._st, 0, E * sizeof(EnvState))
        memset(self._rew, 0, cells * sizeof(double))
        memset(self._suf, 0, cells * sizeof(double))
        self._pow[0] = 1.0
        for i in range(1, self.n + 1):
            self._pow[i] = self._pow[i - 1] * gamma
        cap = E * self.n
        self.env = np.zeros(cap, dtype=np.int64)
        self.start = np.zeros(cap, dtype=np.int64)
        self.boot = np.zeros(cap, dtype=np.int64)
        self.returns = np.zeros(cap, dtype=np.float64)
        self.discounts = np.zeros(cap, dtype=np.float64)
        self._o_env = <long long*>cnp.PyArray_DATA(self.env)
        self._o_start = <long long*>cnp.PyArray_DATA(self.start)
        self._o_boot = <long long*>cnp.PyArray_DATA(self.boot)
        self._o_ret = <double*>cnp.PyArray_DATA(self.returns)
        self._o_disc = <double*>cnp.PyArray_DATA(self.discounts)

    def __dealloc__(self):
        PyMem_Free(self._st)
        PyMem_Free(self._rew)
        PyMem_Free(self._suf)
        PyMem_Free(self._pow)

    @property
    def pending(self):
        """Transitions per environment waiting for their return (window length)."""
        return np.array([self._st[e].count for e in range(self.num_envs)], dtype=np.intp)

    @property
    def steps(self):
        """Steps recorded per environment, masked steps included."""
        return np.array([self._st[e].step for e in range(self.num_envs)], dtype=np.int64)

    # ------------------------------------------------------------------ core
    cdef inline Py_ssize_t _flush(self, Py_ssize_t e, bint terminated, Py_ssize_t out) noexcept nogil:
        """Emit every transition of the window (episode end); returns samples written."""
        cdef EnvState* st = &self._st[e]
        cdef double* rew = self._rew + e * self._ring
        cdef long long s = st.wstart
        cdef Py_ssize_t c = st.count
        cdef long long end = s + c
        cdef double g = self.gamma
        cdef double acc = 0.0
        cdef Py_ssize_t i, o
        for i in range(c - 1, -1, -1):
            acc = rew[(s + i) & self._mask] + g * acc
            o = out + i
            self._o_env[o] = e
            self._o_start[o] = s + i
            self._o_boot[o] = end
            self._o_ret[o] = acc
            self._o_disc[o] = 0.0 if terminated else self._pow[c - i]
        st.count = 0
        return c

    cdef inline Py_ssize_t _record(self, Py_ssize_t e, double r, bint terminated,
                                   bint truncated, Py_ssize_t out) noexcept nogil:
        """Record one transition of env e; returns the number of samples written at out."""
        cdef EnvState* st = &self._st[e]
        cdef double* rew = self._rew + e * self._ring
        cdef double* suf
        cdef long long u = st.step
        cdef long long s
        cdef Py_ssize_t i, c, front_len
        cdef double acc
        st.step = u + 1
        if st.count == 0:
            st.wstart = u
            st.front_end = u
            st.back_sum = 0.0
            st.back_len = 0
        rew[u & self._mask] = r
        st.back_sum += self._pow[st.back_len] * r
        st.back_len += 1
        st.count += 1
        if terminated or truncated:
            return self._flush(e, terminated, out)
        c = st.count
        if c < self.n:
            return 0
        s = st.wstart
        suf = self._suf + e * self._ring
        front_len = <Py_ssize_t>(st.front_end - s)
        if front_len <= 0:
            # Front empty: turn the whole window into suffix sums (backward Horner).
            acc = 0.0
            for i in range(c - 1, -1, -1):
                acc = rew[(s + i) & self._mask] + self.gamma * acc
                suf[(s + i) & self._mask] = acc
            st.front_end = s + c
            st.back_sum = 0.0
            st.back_len = 0
            front_len = c
        self._o_env[out] = e
        self._o_start[out] = s
        self._o_boot[out] = u + 1
        self._o_ret[out] = suf[s & self._mask] + self._pow[front_len] * st.back_sum
        self._o_disc[out] = self._pow[c]
        st.wstart = s + 1
        st.count = c - 1
        return 1

    cdef Py_ssize_t _push(self, const double* rewards, const cnp.npy_bool* terminated,
                          const cnp.npy_bool* truncated, const cnp.npy_bool* mask) except -1:
        cdef Py_ssize_t e, out = 0
        cdef int err = OK
        with nogil:
            # Validate everything before changing any state.
            for e in range(self.num_envs):
                if mask != NULL and not mask[e]:
                    if self._st[e].count > 0:
                        err = ERR_MASKED_OPEN
                        self._bad_env = e
                        break
                elif not isfinite(rewards[e]):
                    err = ERR_NONFINITE
                    self._bad_env = e
                    self._bad_reward = rewards[e]
                    break
            if err == OK:
                for e in range(self.num_envs):
                    if mask != NULL and not mask[e]:
                        self._st[e].step += 1
                    else:
                        out += self._record(e, rewards[e], terminated[e], truncated[e], out)
        if err == ERR_NONFINITE:
            raise ValueError(f"rewards must be finite, got {self._bad_reward!r} for env {self._bad_env}")
        if err == ERR_MASKED_OPEN:
            raise ValueError(
                f"mask is False for env {self._bad_env} while its episode has "
                f"{self._st[self._bad_env].count} pending transitions; mask only the "
                f"autoreset steps that follow an episode end")
        return out

    # ------------------------------------------------------------ python API
    def push(self, rewards, terminated, truncated, mask=None):
        """Record one transition for every environment; returns samples emitted.

        rewards: float64[num_envs]; terminated, truncated, mask: bool[num_envs].
        Other dtypes are accepted where the cast is safe (float32 or integer
        rewards, 0/1 integer flags). Where ``mask`` is False the env's step is
        skipped (a vector env's autoreset step): it must not have an open episode.
        """
        cdef Py_ssize_t E = self.num_envs
        cdef cnp.ndarray r = _checked(rewards, cnp.NPY_DOUBLE, E, "rewards")
        cdef cnp.ndarray te = _checked(terminated, cnp.NPY_BOOL, E, "terminated")
        cdef cnp.ndarray tr = _checked(truncated, cnp.NPY_BOOL, E, "truncated")
        cdef cnp.ndarray m
        if mask is None:
            return self._push(<double*>cnp.PyArray_DATA(r), <cnp.npy_bool*>cnp.PyArray_DATA(te),
                              <cnp.npy_bool*>cnp.PyArray_DATA(tr), NULL)
        m = _checked(mask, cnp.NPY_BOOL, E, "mask")
        return self._push(<double*>cnp.PyArray_DATA(r), <cnp.npy_bool*>cnp.PyArray_DATA(te),
                          <cnp.npy_bool*>cnp.PyArray_DATA(tr), <cnp.npy_bool*>cnp.PyArray_DATA(m))

    def drop(self, Py_ssize_t env):
        """Forget env's open window without emitting it (the env was replaced after a fault); its step
        count goes on."""
        if env < 0 or env >= self.num_envs:
            raise IndexError(f"env must be in [0, {self.num_envs}), got {env}")
        cdef EnvState* st = &self._st[env]
        st.count = 0
        st.back_len = 0
        st.back_sum = 0.0

    def push_one(self, Py_ssize_t env, double reward, bint terminated=False, bint truncated=False):
        """Record one transition of one environment; returns samples emitted."""
        if env < 0 or env >= self.num_envs:
            raise IndexError(f"env must be in [0, {self.num_envs}), got {env}")
        if not isfinite(reward):
            raise ValueError(f"rewards must be finite, got {reward!r} for env {env}")
        return self._record(env, reward, terminated, truncated, 0)


def trajectory_returns(NStepKernel kernel not None, rewards, terminated, truncated,
                       cnp.ndarray returns, cnp.ndarray discounts):
    """Run one trajectory through env 0 of a fresh ``kernel``; the end counts as truncation.

    Inputs are validated by the caller (same length, finite rewards, float64
    outputs). Writes ``returns[t]`` and ``discounts[t]`` for every step t.
    """
    if kernel._st[0].step != 0 or kernel._st[0].count != 0:
        raise ValueError("trajectory_returns needs a fresh kernel (env 0 has recorded steps)")
    cdef Py_ssize_t T = len(rewards)
    cdef cnp.ndarray r = _checked(rewards, cnp.NPY_DOUBLE, T, "rewards")
    cdef cnp.ndarray te = _checked(terminated, cnp.NPY_BOOL, T, "terminated")
    cdef cnp.ndarray tr = _checked(truncated, cnp.NPY_BOOL, T, "truncated")
    if not (_is_array(returns, cnp.NPY_DOUBLE, T) and _is_array(discounts, cnp.NPY_DOUBLE, T)):
        raise ValueError(f"returns and discounts must be contiguous float64 arrays of length {T}")
    cdef const double* rp = <double*>cnp.PyArray_DATA(r)
    cdef const cnp.npy_bool* tep = <cnp.npy_bool*>cnp.PyArray_DATA(te)
    cdef const cnp.npy_bool* trp = <cnp.npy_bool*>cnp.PyArray_DATA(tr)
    cdef double* ret = <double*>cnp.PyArray_DATA(returns)
    cdef double* disc = <double*>cnp.PyArray_DATA(discounts)
    cdef Py_ssize_t t, i, c
    with nogil:
        for t in range(T):
            c = kernel._record(0, rp[t], tep[t], trp[t] or t == T - 1, 0)
            for i in range(c):
                ret[kernel._o_start[i]] = kernel._o_ret[i]
                disc[kernel._o_start[i]] = kernel._o_disc[i]


cdef _need_2d(object x, int typenum, Py_ssize_t rows, Py_ssize_t cols, str name, bint out=False):
    """Raise ValueError unless x is a C-contiguous, native-order 2-D array of that dtype and shape."""
    cdef cnp.ndarray a
    if cnp.PyArray_Check(x):
        a = <cnp.ndarray>x
        if (cnp.PyArray_NDIM(a) == 2 and cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(a)
                and cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_DIMS(a)[0] == rows
                and cnp.PyArray_DIMS(a)[1] == cols and (not out or cnp.PyArray_ISWRITEABLE(a))):
            return
    kind = "float64" if typenum == cnp.NPY_DOUBLE else "bool"
    got = f"{x.dtype} {x.shape}" if cnp.PyArray_Check(x) else type(x).__name__
    raise ValueError(f"{name} must be a C-contiguous{' writeable' if out else ''} {kind} array of shape "
                     f"({rows}, {cols}), got {got}")


def vtrace_into(cnp.ndarray values not None, cnp.ndarray rewards not None, cnp.ndarray log_rhos not None,
                cnp.ndarray terminated not None, cnp.ndarray truncated not None, cnp.ndarray valid not None,
                double gamma, double rho_bar, double c_bar,
                cnp.ndarray vs not None, cnp.ndarray advantages not None, cnp.ndarray carry not None):
    """V-trace targets and policy-gradient advantages of a batch of segments, written into
    ``vs`` and ``advantages`` ([T, E] float64). ``asynca3c.core.vtrace.vtrace`` converts its
    inputs; here they must already be values float64 [T+1, E]; rewards, log_rhos float64
    [T, E]; flags bool [T, E]; ``carry`` float64 [E] scratch; all C-contiguous (else ValueError).

    Returns ``(0, 0)``, or ``(which, flat index)`` of the first non-finite input
    (1 values, 2 rewards, 3 log_rhos), checked as the data are read.

    Backward over t, vectorized over e (rows are contiguous): ``carry[e]`` holds
    vs[t+1] - values[t+1] of the same episode, or 0 where the episode does not go on
    (terminated, truncated, an invalid step, the segment's end).
    """
    if cnp.PyArray_NDIM(rewards) != 2 or cnp.PyArray_DIMS(rewards)[0] < 1 or cnp.PyArray_DIMS(rewards)[1] < 1:
        raise ValueError(f"rewards must be a 2-D array [T, E] with T, E >= 1, got shape {(<object>rewards).shape}")
    cdef Py_ssize_t T = cnp.PyArray_DIMS(rewards)[0], E = cnp.PyArray_DIMS(rewards)[1]
    # Checked here too, so that no call writes or reads out of bounds whatever it is given.
    _need_2d(values, cnp.NPY_DOUBLE, T + 1, E, "values")
    _need_2d(rewards, cnp.NPY_DOUBLE, T, E, "rewards")
    _need_2d(log_rhos, cnp.NPY_DOUBLE, T, E, "log_rhos")
    _need_2d(terminated, cnp.NPY_BOOL, T, E, "terminated")
    _need_2d(truncated, cnp.NPY_BOOL, T, E, "truncated")
    _need_2d(valid, cnp.NPY_BOOL, T, E, "valid")
    _need_2d(vs, cnp.NPY_DOUBLE, T, E, "vs", True)
    _need_2d(advantages, cnp.NPY_DOUBLE, T, E, "advantages", True)
    if not (_is_array(carry, cnp.NPY_DOUBLE, E) and cnp.PyArray_ISWRITEABLE(carry)):
        raise ValueError(f"carry must be a C-contiguous writeable float64 array of shape ({E},), "
                         f"got {carry.dtype} {(<object>carry).shape}")
    cdef const double* v = <double*>cnp.PyArray_DATA(values)
    cdef const double* r = <double*>cnp.PyArray_DATA(rewards)
    cdef const double* lr = <double*>cnp.PyArray_DATA(log_rhos)
    cdef const cnp.npy_bool* te = <cnp.npy_bool*>cnp.PyArray_DATA(terminated)
    cdef const cnp.npy_bool* tr = <cnp.npy_bool*>cnp.PyArray_DATA(truncated)
    cdef const cnp.npy_bool* ok = <cnp.npy_bool*>cnp.PyArray_DATA(valid)
    cdef double* out_vs = <double*>cnp.PyArray_DATA(vs)
    cdef double* out_adv = <double*>cnp.PyArray_DATA(advantages)
    cdef double* acc = <double*>cnp.PyArray_DATA(carry)
    cdef Py_ssize_t t, e, i, bad = 0
    cdef int which = 0
    cdef double rho, cr, cc, vt, vn, delta, q
    with nogil:
        for e in range(E):
            acc[e] = 0.0
            if not isfinite(v[T * E + e]):
                which, bad = 1, T * E + e
                break
        t = T - 1
        while t >= 0 and which == 0:
            for e in range(E):
                i = t * E + e
                vt = v[i]
                if not (isfinite(vt) and isfinite(r[i]) and isfinite(lr[i])):
                    which = 1 if not isfinite(vt) else (2 if not isfinite(r[i]) else 3)
                    bad = i
                    break
                if not ok[i]:  # an autoreset step: no target, no advantage, nothing carried over it
                    out_vs[i] = vt
                    out_adv[i] = 0.0
                    acc[e] = 0.0
                    continue
                rho = exp(lr[i])
                cr = rho if rho < rho_bar else rho_bar
                cc = rho if rho < c_bar else c_bar
                vn = v[i + E]
                if te[i]:  # no bootstrap, nothing carried
                    q = r[i]
                    delta = cr * (q - vt)
                    acc[e] = delta
                elif tr[i]:  # bootstrap from the final observation's value, nothing carried
                    q = r[i] + gamma * vn
                    delta = cr * (q - vt)
                    acc[e] = delta
                else:
                    q = r[i] + gamma * (vn + acc[e])
                    delta = cr * (r[i] + gamma * vn - vt)
                    acc[e] = delta + gamma * cc * acc[e]
                out_vs[i] = vt + acc[e]
                out_adv[i] = cr * (q - vt)
            t -= 1
    return which, bad
