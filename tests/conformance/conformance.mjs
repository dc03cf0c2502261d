// Conformance of the real ckptd with llama-stack's post-training API, as its
// official TypeScript client sees it.
//
//   node conformance.mjs <path to ckptd> <spec dir holding post-training-openapi.json>
//
// Starts ckptd on 127.0.0.1:0 over a temporary folder, plays a small Hugging
// Face Trainer run into it (checkpoint-N folders, trainer_state.json written
// last), drives the daemon with `llama-stack-client`, validates every raw
// body against the spec's schemas with Ajv, checks ETag/304, long-poll, the
// event stream, the POST routes ckptd does not run, and parses /metrics with
// a Prometheus text-format parser. Ends the daemon with SIGTERM and expects
// exit code 0. Exits non-zero on the first failure.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

import LlamaStackClient from 'llama-stack-client';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';

const [ckptdPath, specDir] = process.argv.slice(2);
if (!ckptdPath || !specDir) {
  console.error('usage: node conformance.mjs <ckptd> <spec dir>');
  process.exit(2);
}

const JOB = 'conformance-job-1';
const DEADLINE_MS = 30_000;

// ---- schemas ----------------------------------------------------------------

const spec = JSON.parse(readFileSync(join(specDir, 'post-training-openapi.json'), 'utf8'));
// OpenAPI's schema objects are JSON Schema; "example" and friends are not
// validation keywords, hence strict: false.
const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(spec, 'spec');

function validate(schemaName, body, what) {
  const check = ajv.getSchema(`spec#/components/schemas/${schemaName}`);
  assert.ok(check, `no schema ${schemaName} in the spec`);
  if (!check(body)) {
    throw new Error(`${what}: not a valid ${schemaName}: ${ajv.errorsText(check.errors)}\n` +
                    JSON.stringify(body));
  }
}

// ---- the daemon ---------------------------------------------------------------

const root = mkdtempSync(join(tmpdir(), 'ckptd-conformance-'));
const runs = join(root, 'runs');
const jobDir = join(runs, JOB);
mkdirSync(jobDir, { recursive: true });

const daemon = spawn(ckptdPath, [
  '--listen', '127.0.0.1:0',
  '--watch', runs,
  '--db', join(root, 'db'),
  '--log-level', 'info',
  // The raw checks below poll without honouring Retry-After.
  '--rate-limit', '1000', '--rate-burst', '1000',
], { stdio: ['ignore', 'inherit', 'pipe'] });

let exited = null;
const exitPromise = new Promise((resolve) => {
  daemon.on('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  });
});

const port = await new Promise((resolve, reject) => {
  let seen = '';
  const timer = setTimeout(() => reject(new Error('ckptd did not log its port in time')), DEADLINE_MS);
  daemon.stderr.on('data', (chunk) => {
    process.stderr.write(chunk);
    seen += chunk.toString();
    const m = seen.match(/listening on 127\.0\.0\.1:(\d+)/);
    if (m) {
      clearTimeout(timer);
      resolve(Number(m[1]));
    }
  });
  daemon.on('exit', () => reject(new Error(`ckptd exited early: ${JSON.stringify(exited)}`)));
});
// Keep echoing the daemon's log after the port line.
const baseURL = `http://127.0.0.1:${port}`;
const client = new LlamaStackClient({ baseURL });

async function until(what, fn) {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    if (exited) throw new Error(`ckptd exited while waiting for ${what}: ${JSON.stringify(exited)}`);
    const value = await fn().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function raw(path, headers = {}) {
  const res = await fetch(baseURL + path, { headers });
  const text = await res.text();
  return { res, text };
}

// ---- a Hugging Face Trainer run -------------------------------------------------

// A small but well-formed safetensors file: an 8-byte little-endian header
// length, the JSON header (padded to 8 bytes), then the tensor bytes.
function safetensors() {
  let header = JSON.stringify({ w: { dtype: 'F32', shape: [4, 4], data_offsets: [0, 64] } });
  header += ' '.repeat((8 - (header.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));
  return Buffer.concat([length, Buffer.from(header), Buffer.alloc(64, 1)]);
}

function saveCheckpoint(step, epoch, loss, evalLoss) {
  // Written into a temporary name and renamed, as a real save's files are all
  // in place before trainer_state.json; that file goes last.
  const dir = join(jobDir, `checkpoint-${step}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', hidden_size: 64 }));
  writeFileSync(join(dir, 'model.safetensors'), safetensors());
  const state = {
    global_step: step,
    epoch,
    log_history: [
      { loss, step, epoch },
      { eval_loss: evalLoss, step, epoch },
    ],
  };
  writeFileSync(join(dir, 'trainer_state.json.tmp'), JSON.stringify(state));
  renameSync(join(dir, 'trainer_state.json.tmp'), join(dir, 'trainer_state.json'));
}

let failures = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n     ${e.stack ?? e}`);
  }
}

try {
  await until('/readyz', async () => (await fetch(`${baseURL}/readyz`)).status === 200);

  saveCheckpoint(10, 1.0, 2.59133, 2.71);
  saveCheckpoint(20, 2.0, 1.8, 2.05);

  await check('job list through the client', async () => {
    const jobs = await until('the job to appear', async () => {
      const list = await client.postTraining.job.list();
      return list.some((j) => j.job_uuid === JOB) ? list : undefined;
    });
    assert.ok(Array.isArray(jobs));
    const { res, text } = await raw('/v1/post-training/jobs');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    validate('ListPostTrainingJobsResponse', JSON.parse(text), 'GET /v1/post-training/jobs');
  });

  await check('artifacts through the client', async () => {
    const artifacts = await until('two checkpoints', async () => {
      const a = await client.postTraining.job.artifacts({ job_uuid: JOB });
      return a.checkpoints.length === 2 ? a : undefined;
    });
    assert.equal(artifacts.job_uuid, JOB);
    const ids = artifacts.checkpoints.map((c) => c.identifier);
    assert.deepEqual(ids, ['checkpoint-10', 'checkpoint-20']);
    const first = artifacts.checkpoints[0];
    assert.equal(first.post_training_job_id, JOB);
    assert.equal(first.epoch, 1);
    assert.ok(first.path.endsWith(join(JOB, 'checkpoint-10')));
    assert.equal(first.training_metrics.train_loss, 2.59133);
    assert.equal(first.training_metrics.validation_loss, 2.71);
    const { res, text } = await raw(`/v1/post-training/job/artifacts?job_uuid=${JOB}`);
    assert.equal(res.status, 200);
    // Numbers print as the shortest decimal that round-trips, not "2.59133E0".
    assert.ok(text.includes('"train_loss":2.59133'), text);
    validate('PostTrainingJobArtifactsResponse', JSON.parse(text), 'GET artifacts');
  });

  await check('status through the client', async () => {
    const status = await client.postTraining.job.status({ job_uuid: JOB });
    assert.equal(status.job_uuid, JOB);
    assert.ok(['completed', 'in_progress', 'failed', 'scheduled', 'cancelled'].includes(status.status));
    assert.equal(status.checkpoints.length, 2);
    const { res, text } = await raw(`/v1/post-training/job/status?job_uuid=${JOB}`);
    assert.equal(res.status, 200);
    validate('PostTrainingJobStatusResponse', JSON.parse(text), 'GET status');
  });

  await check('errors have the spec Error shape', async () => {
    for (const [path, code] of [
      ['/v1/post-training/job/artifacts?job_uuid=nope', 404],
      ['/v1/post-training/job/status?job_uuid=nope', 404],
      ['/v1/post-training/job/artifacts', 400],
    ]) {
      const { res, text } = await raw(path);
      assert.equal(res.status, code, path);
      validate('Error', JSON.parse(text), path);
    }
    await assert.rejects(
      client.postTraining.job.status({ job_uuid: 'nope' }),
      (e) => e.status === 404,
    );
  });

  await check('POST routes answer 501 (and 400 for bad bodies)', async () => {
    await assert.rejects(
      client.postTraining.job.cancel({ job_uuid: JOB }, { maxRetries: 0 }),
      (e) => e.status === 501,
    );
    for (const path of ['/v1/post-training/job/cancel', '/v1/post-training/supervised-fine-tune',
                        '/v1/post-training/preference-optimize']) {
      const ok = await fetch(baseURL + path, { method: 'POST', body: '{"job_uuid":"x"}',
                                               headers: { 'content-type': 'application/json' } });
      assert.equal(ok.status, 501, path);
      validate('Error', await ok.json(), path);
      const bad = await fetch(baseURL + path, { method: 'POST', body: '{oops' });
      assert.equal(bad.status, 400, path);
      validate('Error', await bad.json(), path);
      const get = await fetch(baseURL + path);
      assert.equal(get.status, 405, path);
      assert.equal(get.headers.get('allow'), 'POST');
    }
  });

  await check('ETag, 304 and a long-poll that wakes on a new checkpoint', async () => {
    const path = `/v1/post-training/job/artifacts?job_uuid=${JOB}`;
    const { res } = await raw(path);
    const etag = res.headers.get('etag');
    assert.ok(etag);
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    const again = await fetch(baseURL + path, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    const started = Date.now();
    const held = fetch(baseURL + path, { headers: { 'if-none-match': etag, prefer: 'wait=25' } });
    await new Promise((r) => setTimeout(r, 300));
    saveCheckpoint(30, 3.0, 1.5, 1.9);
    const woken = await held;
    const waited = Date.now() - started;
    assert.equal(woken.status, 200);
    assert.equal(woken.headers.get('preference-applied'), 'wait=25');
    const body = await woken.json();
    validate('PostTrainingJobArtifactsResponse', body, 'long-poll body');
    assert.equal(body.checkpoints.length, 3);
    console.log(`     long-poll answered ${waited} ms after it was sent`);
  });

  await check('the event stream', async () => {
    const controller = new AbortController();
    const res = await fetch(`${baseURL}/v1/ckptd/events?job_uuid=${JOB}&last_event_id=0`,
                            { signal: controller.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      const chunk = await Promise.race([
        reader.read(),
        new Promise((r) => setTimeout(() => r({ timeout: true }), 500)),
      ]);
      if (chunk.done) break;
      if (chunk.value) text += decoder.decode(chunk.value, { stream: true });
    }
    controller.abort();
    const frames = text.split('\n\n').filter((f) => f.includes('event: '));
    let created = 0;
    for (const frame of frames) {
      const event = /event: (.*)/.exec(frame)[1];
      assert.match(frame, /^id: \d+$/m);
      const data = JSON.parse(frame.split('\n').filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6)).join('\n'));
      if (event === 'checkpoint.created') {
        created++;
        assert.equal(data.job_uuid, JOB);
        validate('Checkpoint', data.checkpoint, 'checkpoint.created data');
      }
    }
    console.log(`     ${frames.length} events replayed, ${created} checkpoint.created`);
  });

  await check('/metrics parses as Prometheus text format', async () => {
    const { res, text } = await raw('/metrics');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const families = parsePrometheusTextFormat(text);
    const byName = Object.fromEntries(families.map((f) => [f.name, f]));
    for (const name of ['ckptd_http_requests_total', 'ckptd_http_request_duration_seconds',
                        'ckptd_http_rate_limited_total', 'ckptd_http_open_connections',
                        'ckptd_checkpoints_indexed', 'ckptd_jobs_indexed',
                        'ckptd_ingest_latency_seconds', 'ckptd_inotify_watches',
                        'ckptd_rescans_total', 'ckptd_index_write_failures_total',
                        'ckptd_index_healthy', 'ckptd_build_info']) {
      assert.ok(byName[name], `no ${name} in /metrics`);
    }
    assert.equal(byName.ckptd_http_requests_total.type, 'COUNTER');
    assert.equal(byName.ckptd_http_request_duration_seconds.type, 'HISTOGRAM');
    const jobs = byName.ckptd_http_requests_total.metrics
      .find((m) => m.labels.route === 'jobs' && m.labels.code === '200');
    assert.ok(jobs && Number(jobs.value) >= 1, 'jobs route not counted');
    for (const family of families) {
      for (const m of family.metrics) {
        const values = m.buckets ? Object.values(m.buckets) : [m.value];
        for (const v of values) assert.ok(!Number.isNaN(Number(v)), `${family.name}: ${v}`);
      }
    }
  });

  await check('/openapi.json describes what is served', async () => {
    const { res, text } = await raw('/openapi.json');
    assert.equal(res.status, 200);
    const doc = JSON.parse(text);
    for (const p of Object.keys(spec.paths)) assert.ok(doc.paths[p], `missing ${p}`);
    for (const name of ['Checkpoint', 'PostTrainingMetric', 'PostTrainingJobStatusResponse',
                        'PostTrainingJobArtifactsResponse', 'ListPostTrainingJobsResponse', 'Error']) {
      assert.deepEqual(doc.components.schemas[name], spec.components.schemas[name], name);
    }
  });
} catch (e) {
  failures++;
  console.log(`FAIL ${e.stack ?? e}`);
} finally {
  if (!exited) daemon.kill('SIGTERM');
  const timer = setTimeout(() => daemon.kill('SIGKILL'), 15_000);
  const { code, signal } = await exitPromise;
  clearTimeout(timer);
  if (code !== 0) {
    failures++;
    console.log(`FAIL ckptd exited with ${code ?? signal} after SIGTERM (expected 0)`);
  }
  rmSync(root, { recursive: true, force: true });
}

console.log(failures === 0 ? 'conformance: all checks passed' : `conformance: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
