// Build: widget/src -> widget/dist/widget.js (minified IIFE), widget.<hash>.js and manifest.json.
// Usage: npm run build   (node build.mjs)
import * as esbuild from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const pkg = JSON.parse(await readFile(join(here, 'package.json'), 'utf8'));

const css = (await esbuild.transform(await readFile(join(here, 'src/widget.css'), 'utf8'), {
  loader: 'css', minify: true, target: ['chrome100', 'firefox100', 'safari15'],
})).code.trim();

const out = await esbuild.build({
  entryPoints: [join(here, 'src/index.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  // Browsers from 2021 on. Keep the source free of regex lookbehind (Safari < 16.4 can't parse it).
  target: ['chrome96', 'edge96', 'firefox90', 'safari15', 'ios15'],
  define: { __CSS__: JSON.stringify(css), __VERSION__: JSON.stringify(pkg.version) },
  legalComments: 'none',
  write: false,
});
const code = out.outputFiles[0].contents;
const hash = createHash('sha256').update(code).digest('hex').slice(0, 16);
const gzip = gzipSync(code, { level: 9 }).length;

await mkdir(dist, { recursive: true });
for (const f of await readdir(dist)) if (/^widget\.[0-9a-f]{16}\.js$/.test(f)) await rm(join(dist, f));
await writeFile(join(dist, 'widget.js'), code);
await writeFile(join(dist, `widget.${hash}.js`), code);
const manifest = {
  file: 'widget.js',
  hashed: `widget.${hash}.js`,
  hash,
  integrity: `sha384-${createHash('sha384').update(code).digest('base64')}`,
  bytes: code.length,
  gzip_bytes: gzip,
  version: pkg.version,
};
await writeFile(join(dist, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
console.log(`widget.js ${code.length} B, ${gzip} B gzipped -> dist/widget.${hash}.js`);
