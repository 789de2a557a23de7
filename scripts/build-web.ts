// Builds the web pages (the playground at / and the API reference at /docs) from web/ into
// build/web, which the server serves (src/http/routes/web.ts). Idempotent: the build writes the
// list of files it was made from and their hash, and runs again only when one of them changed
// (or web/ gained a file), so setup pays a few milliseconds when nothing did.
//   node --import tsx scripts/build-web.ts [--force]
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { build } from 'esbuild';

const root = join(import.meta.dirname, '..');
const web = join(root, 'web');
const out = join(root, 'build', 'web');
const stampFile = join(out, '.source');
const log = (msg: string) => process.stderr.write(`pybox setup: ${msg}\n`);

/** Files of web/, relative to the root. */
function webFiles(dir = web): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? webFiles(join(dir, e.name)) : [relative(root, join(dir, e.name))]));
}

// Swagger UI is served as its package ships it: the bundle and its stylesheet.
const require = createRequire(import.meta.url);
const swaggerDir = dirname(require.resolve('swagger-ui-dist/package.json'));
const SWAGGER_FILES = ['swagger-ui-bundle.js', 'swagger-ui.css'];

function hashOf(files: readonly string[]): string {
  const h = createHash('sha256');
  for (const f of [...new Set(files)].sort()) {
    h.update(f).update('\0');
    h.update(existsSync(join(root, f)) ? readFileSync(join(root, f)) : 'missing').update('\0');
  }
  return h.digest('hex');
}

interface Stamp {
  inputs: string[];
  hash: string;
}

function readStamp(): Stamp | undefined {
  try {
    const s = JSON.parse(readFileSync(stampFile, 'utf8')) as Stamp;
    return Array.isArray(s.inputs) && typeof s.hash === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}

const always = () => [...webFiles(), 'package-lock.json', relative(root, import.meta.filename), ...SWAGGER_FILES.map((f) => relative(root, join(swaggerDir, f)))];

const stamp = readStamp();
if (!process.argv.includes('--force') && stamp && hashOf([...stamp.inputs, ...always()]) === stamp.hash) {
  process.exit(0);
}

const started = Date.now();
const tmp = `${out}.tmp-${process.pid}`;
rmSync(tmp, { recursive: true, force: true });
mkdirSync(join(tmp, 'assets'), { recursive: true });
try {
  const result = await build({
    absWorkingDir: root,
    entryPoints: { playground: 'web/playground.ts', docs: 'web/docs.ts', 'playground-style': 'web/playground.css', 'docs-style': 'web/docs.css' },
    entryNames: '[name]',
    outdir: join(tmp, 'assets'),
    bundle: true,
    format: 'esm',
    target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
    minify: true,
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
    legalComments: 'linked',
  });
  // The stylesheets were named apart from the scripts of the same name; the pages ask for <name>.css.
  for (const name of ['playground', 'docs']) {
    renameSync(join(tmp, 'assets', `${name}-style.css`), join(tmp, 'assets', `${name}.css`));
    const map = join(tmp, 'assets', `${name}-style.css.map`);
    if (existsSync(map)) {
      renameSync(map, join(tmp, 'assets', `${name}.css.map`));
      const css = join(tmp, 'assets', `${name}.css`);
      writeFileSync(css, readFileSync(css, 'utf8').replace(`${name}-style.css.map`, `${name}.css.map`));
    }
  }
  copyFileSync(join(web, 'index.html'), join(tmp, 'index.html'));
  copyFileSync(join(web, 'docs.html'), join(tmp, 'docs.html'));
  copyFileSync(join(web, 'favicon.svg'), join(tmp, 'assets', 'favicon.svg'));
  for (const f of SWAGGER_FILES) copyFileSync(join(swaggerDir, f), join(tmp, 'assets', f));
  const inputs = Object.keys(result.metafile.inputs).filter((f) => !f.startsWith('<'));
  writeFileSync(join(tmp, '.source'), JSON.stringify({ inputs, hash: hashOf([...inputs, ...always()]) } satisfies Stamp));
  rmSync(out, { recursive: true, force: true });
  renameSync(tmp, out);
} catch (e) {
  rmSync(tmp, { recursive: true, force: true });
  throw e;
}
const size = readdirSync(join(out, 'assets')).reduce((n, f) => n + statSync(join(out, 'assets', f)).size, 0);
log(`web pages built into build/web (${Math.round(size / 1024)} KiB of assets) in ${Date.now() - started} ms`);
