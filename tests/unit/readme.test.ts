/**
 * README stays true: every server flag, client flag and client command that the code
 * defines is in the README, with the server flags' defaults, and the quick start's
 * npm scripts exist.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI_FLAGS, COMMANDS } from '../../client/cli';
import { SERVER_OPTIONS } from '../../server/cli_options';
import { DEFAULT_PORTS } from '../../shared/constants';

const root = path.resolve(__dirname, '../..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };

describe('README', () => {
  it.each(SERVER_OPTIONS.map((o) => [o.flag]))('documents server flag --%s', (flag) => {
    expect(readme).toContain(`\`--${flag} `);
  });

  it.each(CLI_FLAGS.map((f) => [f.flag]))('documents client flag --%s', (flag) => {
    expect(readme).toMatch(new RegExp(`--${flag}[\` ]`));
  });

  it.each(COMMANDS.map((c) => [c.name]))('documents client command /%s', (name) => {
    expect(readme).toContain(`/${name}`);
  });

  it('lists every default port', () => {
    for (const port of Object.values(DEFAULT_PORTS)) expect(readme).toContain(`| ${port} |`);
  });

  it('its quick start commands are npm scripts that exist', () => {
    for (const script of ['setup', 'start', 'test', 'bench', 'bench:control']) expect(pkg.scripts[script]).toBeTruthy();
    expect(readme).toContain('npm run setup && npm start');
    expect(readme).toContain('npm test');
  });
});
