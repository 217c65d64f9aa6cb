// async_bench_node.js - node-postgres' pool (npm pg), one event loop: CLIENTS
// logical clients each running SELECT 1 one after the other on a pool of
// POOL connections, for bench/async_bench.sh. A warm-up second is not counted.
//   node async_bench_node.js CONNINFO CLIENTS POOL SECONDS
// Prints "tps=N statements=N errors=N".
'use strict';
const { Pool } = require('pg');

const [conninfo, clients, size, secs] = process.argv.slice(2);
// pg takes a URI or its own options; our conninfo is libpq key=value
function parse(ci) {
  if (/^postgres(ql)?:\/\//.test(ci)) return { connectionString: ci };
  const o = {};
  for (const m of ci.matchAll(/(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/g)) {
    let v = m[2];
    if (v.startsWith("'")) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    o[m[1]] = v;
  }
  return { host: o.host || o.hostaddr, port: o.port && Number(o.port), user: o.user,
           database: o.dbname, password: o.password };
}
const pool = new Pool({ ...parse(conninfo), max: Number(size) });
let counting = false, stop = false, done = 0, errors = 0;

async function client() {
  while (!stop) {
    try {
      await pool.query('SELECT 1');
      if (counting) done++;
    } catch (e) {
      if (counting) errors++;
    }
  }
}

(async () => {
  // every connection up before the clock starts
  const held = await Promise.all(Array.from({ length: Number(size) }, () => pool.connect()));
  held.forEach((c) => c.release());
  const runs = Array.from({ length: Number(clients) }, client);
  await new Promise((r) => setTimeout(r, 1000));
  counting = true;
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, Number(secs) * 1000));
  counting = false;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  stop = true;
  await Promise.all(runs);
  console.log(`tps=${Math.round((done * 1000) / ms)} statements=${done} errors=${errors}`);
  await pool.end();
})();
