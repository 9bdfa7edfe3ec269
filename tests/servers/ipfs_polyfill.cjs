// js-ipfs 0.66 calls Promise.withResolvers, which Node 20 lacks (Node 22 has it). Loaded with
// NODE_OPTIONS="--require tests/servers/ipfs_polyfill.cjs" by tests/servers/ipfs.py.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
