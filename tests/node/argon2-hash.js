'use strict';
// Prints the argon2id hash of the password given as the first argument, made the way
// an Express app hashes its users' passwords with the `argon2` package's defaults
// (tests/api/migration.rs logs in to Shoal with it).
const argon2 = require('argon2');

argon2
  .hash(process.argv[2], { type: argon2.argon2id })
  .then((hash) => process.stdout.write(`${hash}\n`))
  .catch((e) => {
    process.stderr.write(`${e.stack || e}\n`);
    process.exit(1);
  });
