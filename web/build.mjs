// Builds the console into dist/: the page and its script from src/, and
// OvenPlayer and hls.js from node_modules (never copied into the repo).
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const dist = join(here, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, 'vendor'), { recursive: true });
cpSync(join(here, 'src'), dist, { recursive: true });
cpSync(require.resolve('ovenplayer/dist/ovenplayer.js'), join(dist, 'vendor', 'ovenplayer.js'));
cpSync(require.resolve('hls.js/dist/hls.min.js'), join(dist, 'vendor', 'hls.min.js'));
console.log(`console built into ${dist}`);
