// edgefn's Promise: the build puts this script first in every bundle, so `Promise` and every lowered
// `async`/`await` in the bundle (the build compiles them to generators) use it. Its reactions run from
// edgefn's own job queue, which each invocation drains before it returns: the engine's native job queue
// is never run by a synchronous export, and edgefn's fetch and kv calls complete synchronously, so
// every promise of an invocation settles within it.
var Promise = (() => {
  const queue = [];
  const PENDING = 0, FULFILLED = 1, REJECTED = 2, ADOPTING = 3;
  const isThenable = (v) => v !== null && (typeof v === "object" || typeof v === "function") && typeof v.then === "function";

  class Promise {
    constructor(executor) {
      if (typeof executor !== "function") throw new TypeError("Promise resolver is not a function");
      this._state = PENDING;
      this._value = undefined;
      this._reactions = [];
      let done = false;
      const resolve = (v) => { if (!done) { done = true; this._resolve(v); } };
      const reject = (e) => { if (!done) { done = true; this._settle(REJECTED, e); } };
      try { executor(resolve, reject); } catch (e) { reject(e); }
    }

    _resolve(value) {
      if (value === this) return this._settle(REJECTED, new TypeError("a promise cannot resolve to itself"));
      let then;
      try { then = isThenable(value) ? value.then : undefined; } catch (e) { return this._settle(REJECTED, e); }
      if (then === undefined) return this._settle(FULFILLED, value);
      this._state = ADOPTING;
      queue.push(() => {
        let done = false;
        const ok = (v) => { if (!done) { done = true; this._state = PENDING; this._resolve(v); } };
        const fail = (e) => { if (!done) { done = true; this._state = PENDING; this._settle(REJECTED, e); } };
        try { then.call(value, ok, fail); } catch (e) { fail(e); }
      });
    }

    _settle(state, value) {
      if (this._state === FULFILLED || this._state === REJECTED) return;
      this._state = state;
      this._value = value;
      for (const reaction of this._reactions) queue.push(reaction);
      this._reactions = [];
    }

    then(onFulfilled, onRejected) {
      return new Promise((resolve, reject) => {
        const react = () => {
          const handler = this._state === FULFILLED ? onFulfilled : onRejected;
          if (typeof handler !== "function") return (this._state === FULFILLED ? resolve : reject)(this._value);
          let out;
          try { out = handler(this._value); } catch (e) { return reject(e); }
          resolve(out);
        };
        if (this._state === FULFILLED || this._state === REJECTED) queue.push(react);
        else this._reactions.push(react);
      });
    }

    catch(onRejected) { return this.then(undefined, onRejected); }

    finally(onFinally) {
      if (typeof onFinally !== "function") return this.then(onFinally, onFinally);
      return this.then(
        (v) => Promise.resolve(onFinally()).then(() => v),
        (e) => Promise.resolve(onFinally()).then(() => { throw e; }),
      );
    }

    get [Symbol.toStringTag]() { return "Promise"; }

    static resolve(v) { return v instanceof Promise ? v : new Promise((resolve) => resolve(v)); }
    static reject(e) { return new Promise((_, reject) => reject(e)); }
    static withResolvers() {
      let resolve, reject;
      const promise = new Promise((ok, fail) => { resolve = ok; reject = fail; });
      return { promise, resolve, reject };
    }
    static all(items) {
      return new Promise((resolve, reject) => {
        const out = []; let left = 1, i = 0;
        for (const item of items) {
          const at = i++; left++;
          Promise.resolve(item).then((v) => { out[at] = v; if (--left === 0) resolve(out); }, reject);
        }
        if (--left === 0) resolve(out);
      });
    }
    static allSettled(items) {
      return Promise.all(Array.from(items, (item) => Promise.resolve(item).then(
        (value) => ({ status: "fulfilled", value }), (reason) => ({ status: "rejected", reason }))));
    }
    static race(items) {
      return new Promise((resolve, reject) => { for (const item of items) Promise.resolve(item).then(resolve, reject); });
    }
    static any(items) {
      return new Promise((resolve, reject) => {
        const errors = []; let left = 1, i = 0;
        for (const item of items) {
          const at = i++; left++;
          Promise.resolve(item).then(resolve, (e) => { errors[at] = e; if (--left === 0) reject(new AggregateError(errors, "All promises were rejected")); });
        }
        if (--left === 0) reject(new AggregateError(errors, "All promises were rejected"));
      });
    }

    // edgefn's: run every queued reaction (those they queue too), then say how `promise` ended
    static __drain(promise) {
      while (queue.length) queue.shift()();
      return promise === undefined ? undefined : { state: promise._state, value: promise._value };
    }
  }
  return Promise;
})();
var queueMicrotask = (callback) => { Promise.resolve().then(callback); };
