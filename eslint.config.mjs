// ESLint (flat config) with typescript-eslint's type-aware rules: `npm run lint`, and a check of
// scripts/test.sh. Layout (wrapping at 160 columns, quotes, indentation) is Prettier's
// (.prettierrc.json); max-len below only catches the long lines Prettier cannot wrap.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig([
  globalIgnores(['dist/', 'node_modules/', '.runtime/', '.lab/', 'bpf/', 'deploy/', 'test/fixtures/']),
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        // The type-aware rules need types: the TypeScript sources and tests see the program that
        // `tsc -p tsconfig.test.json` checks, and nothing else (so an assertion the type check
        // needs is never called unnecessary here); the .mjs scripts, which that program leaves out,
        // have one of their own (tsconfig.scripts.json: allowJs, types from their JSDoc).
        project: ['./tsconfig.test.json', './tsconfig.scripts.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // The two this configuration is for (issue 25): a promise nobody awaits or catches, and a
      // promise where a plain callback was expected (an async listener whose rejection is lost).
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // Passing on another promise's rejection reason (typed any) as it is, is right; what the
      // rule is for is rejecting with a value that is no Error.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingAny: true }],
      // Off: `async` without `await` is how the code implements Promise-returning interfaces
      // (the in-memory lease store, test stubs); the rule's fix, Promise.resolve wrappers, reads worse.
      '@typescript-eslint/require-await': 'off',
      // A leading underscore marks a binding that is unused on purpose; `const { a, ...rest }` drops a.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // What Prettier cannot wrap (comments, and code it leaves whole) stays within its 160 columns;
      // strings, template literals, URLs and regular expressions may run longer, as splitting them
      // hurts grepping more than the width helps. (Core max-len is deprecated for @stylistic's
      // but kept until ESLint 11.)
      'max-len': ['error', { code: 160, tabWidth: 2, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreUrls: true, ignoreRegExpLiterals: true }],
    },
  },
  {
    // Off outside controller/ and maps/: the tests and the scripts read JSON (JSON.parse, ip -j,
    // bpftool -j, kubectl) into `any` in about 700 places; typing each is hundreds of rewrites for
    // code whose assertions fail loudly anyway. The shipped code keeps the rules.
    files: ['test/**', 'vm-tests/**', 'scripts/**', 'vitest.config.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  {
    files: ['**/*.mjs', 'bin/twill'],
    languageOptions: { globals: globals.node },
  },
  {
    // bin/twill is JavaScript without an extension, outside the TypeScript program; its line 2 is
    // a shell command too (see the file) and cannot be wrapped.
    files: ['bin/twill'],
    extends: [tseslint.configs.disableTypeChecked],
    rules: { 'max-len': 'off' },
  },
]);
