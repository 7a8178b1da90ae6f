// The scripts this project builds and deploys: one line each.
import './github/actions/get-repo.js';
import './github/syncs/issues.js';
